"""Child processes of the harness: the nuScenes keyframe index is built in a child interpreter even when the
caller is a script without a main guard; under ``torchrun`` a refusal reaches torchrun's failure summary as our
message, and the differentiable gather of the ranks needs no deprecated API and gives the single-process
gradient."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import bench
from tests.conftest import NUSCENES_SAMPLE

REPO = Path(bench.__file__).resolve().parents[1]
"""The checkout whose code the tests run (the child processes import it too)."""
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_keyframe_index_of_a_script_without_main_guard_is_built_in_a_child(tmp_path):
    """A script without ``if __name__ == "__main__":`` (a ``multiprocessing`` spawn re-runs it in the child,
    which then fails): the index is still built outside the script's process, without a fallback warning."""
    script = tmp_path / "no_guard.py"
    script.write_text(
        textwrap.dedent(f"""
        import json
        import warnings

        from nuscenes.nuscenes import NuScenes

        from bench.data.nuscenes import keyframe_index

        loads = []
        original = NuScenes.__init__


        def counted(self, *args, **kwargs):
            loads.append(1)
            original(self, *args, **kwargs)


        NuScenes.__init__ = counted
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            index = keyframe_index({str(NUSCENES_SAMPLE)!r}, "v1.0-mini", {str(tmp_path / "cache")!r})
        print(json.dumps({{"tables_loaded_here": len(loads), "keyframes": len(index.tokens),
                           "warnings": [str(w.message) for w in caught]}}))
        """)
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["keyframes"] == 1
    assert result["tables_loaded_here"] == 0  # the devkit's tables were read in the child only
    assert not [w for w in result["warnings"] if "keyframe index" in w]
    assert len(list((tmp_path / "cache").glob("nuscenes-v1.0-mini-*.npz"))) == 1


def test_keyframe_index_child_failure_warns_and_builds_here(tmp_path, monkeypatch):
    """A child that cannot build the index: the index is built in this process, with a warning that names
    the child's error and the memory cost."""
    from bench.data import nuscenes

    monkeypatch.setattr(nuscenes, "_CHILD_BUILD", "raise SystemExit('child broke')")
    with pytest.warns(RuntimeWarning, match=r"could not be built in a child process \(child broke\).*6\.7 GB"):
        index = nuscenes.keyframe_index(NUSCENES_SAMPLE, "v1.0-mini", tmp_path)
    assert len(index.tokens) == 1
    assert len(list(tmp_path.glob("nuscenes-v1.0-mini-*.npz"))) == 1


GATHER_SCRIPT = """
import json
import sys
import warnings

import torch
import torch.distributed as dist

from bench import distributed
from models.students.sparse.layers import _AllReduceSum

warnings.simplefilter("error", FutureWarning)  # a deprecated collective would stop the rank
distributed.init(torch.device("cpu"))
rank = distributed.rank()
x = torch.linspace(-1.0, 1.0, 3 * (2 + rank), dtype=torch.float64).reshape(2 + rank, 3) * (rank + 1)
x.requires_grad_(True)
parts = distributed.all_gather_rows(x, differentiable=True)
weights = torch.arange(9, dtype=torch.float64).reshape(3, 3) / 9 + rank  # a different loss on every rank
loss = torch.tanh(torch.cat(parts) @ weights).pow(2).sum()
loss = loss + torch.tanh(_AllReduceSum.apply(x.sum(0)) * (rank + 1)).pow(2).sum()  # synchronised batch norm's sum
loss.backward()
with open(sys.argv[1] + f"/rank{rank}.json", "w") as handle:
    json.dump({"x": x.tolist(), "grad": x.grad.tolist(), "rows": [len(p) for p in parts]}, handle)
dist.destroy_process_group()
"""


def _losses_of_one_process(whole: torch.Tensor) -> torch.Tensor:
    """The sum over the 2 ranks of their losses in ``GATHER_SCRIPT``, from all rows in one process."""
    total = whole.new_zeros(())
    for r in range(2):
        weights = torch.arange(9, dtype=torch.float64).reshape(3, 3) / 9 + r
        total = total + torch.tanh(whole @ weights).pow(2).sum() + torch.tanh(whole.sum(0) * (r + 1)).pow(2).sum()
    return total


def test_differentiable_gather_of_two_gloo_ranks_gives_the_single_process_gradient(tmp_path):
    """2 gloo ranks with 2 and 3 rows, a different loss on each rank (through the row gather and the sum of
    the synchronised batch norm): every rank's rows receive the gradient of the sum of the losses, as one process
    holding all rows computes it; no FutureWarning (the deprecated ``torch.distributed.nn.functional`` is not
    used)."""
    script = tmp_path / "gather.py"
    script.write_text(GATHER_SCRIPT)
    done = subprocess.run(
        [*TORCHRUN, "--nproc_per_node", "2", str(script), str(tmp_path)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FutureWarning" not in done.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rows"] for r in ranks] == [[2, 3], [2, 3]]
    xs = [torch.tensor(r["x"], dtype=torch.float64) for r in ranks]
    whole = torch.cat(xs).requires_grad_(True)
    _losses_of_one_process(whole).backward()
    expected = whole.grad.split([2, 3])
    for r in range(2):
        torch.testing.assert_close(torch.tensor(ranks[r]["grad"], dtype=torch.float64), expected[r])


def test_torchrun_refusal_reaches_the_failure_summary_without_a_traceback_of_ours(tmp_path):
    """3 ranks for batch_size 2: every rank refuses before anything runs. torchrun prints its own
    ``ChildFailedError`` (a traceback of its launcher's frames) for any non-zero exit of a worker; its failure
    summary then shows our message instead of a pointer to its documentation, and no frame of our code."""
    suite = tmp_path / "tiny.yaml"
    defaults = {"dataset": "synthetic", "dataroot": str(tmp_path / "scenes"), "train_scenes": 3, "val_scenes": 1,
                "batch_size": 2, "steps": 2}  # fmt: skip
    suite.write_text(yaml.safe_dump({"name": "tiny", "kind": "distill", "description": "refused",
                                     "defaults": defaults, "grid": {"loss": ["similarity"], "seed": [0]}}))  # fmt: skip
    out = tmp_path / "out"
    done = subprocess.run(
        [*TORCHRUN, "--nproc_per_node", "3", "-m", "bench.run", "--suite", str(suite), "--out", str(out)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    message = "3 ranks but runs similarity-s0 have batch_size 2: every rank needs at least one scan per step"
    assert done.returncode != 0
    assert done.stderr.count(f"error: {message}") == 1, done.stderr[-3000:]  # printed once, by rank 0
    summary = done.stderr[done.stderr.index("Root Cause") :]
    assert f"traceback : {message}" in summary, done.stderr[-3000:]
    assert "To enable traceback see" not in done.stderr  # every rank's summary entry holds the message
    frames = [line for line in done.stderr.splitlines() if line.strip().startswith('File "')]
    assert all("torch/distributed/" in f or "<frozen" in f for f in frames), frames  # torchrun's frames only
    assert not out.exists()


def test_record_error_writes_the_file_torchrun_summarises(tmp_path, monkeypatch):
    """The error file is read by torchelastic's own ``ProcessFailure`` and shown in ``ChildFailedError``; an
    earlier file is kept with ``replace=False``; without ``torchrun`` nothing is written."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from bench import distributed

    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)
    assert not distributed.record_error("not under torchrun")
    path = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(path))
    assert distributed.record_error("the precise error")
    assert not distributed.record_error("a generic exit message", replace=False)
    failure = ProcessFailure(local_rank=0, pid=1, exitcode=2, error_file=str(path))
    summary = str(ChildFailedError("bench.run", {0: failure}))
    assert "traceback : the precise error" in summary
    assert "<N/A>" not in summary


@pytest.mark.slow
def test_two_gloo_ranks_run_without_future_warnings(tmp_path):
    """A 2-step distillation on 2 gloo ranks (row gather of the pairs, synchronised batch norm, evaluation)
    prints no FutureWarning."""
    from tests.conftest import TINY_DEFAULTS

    defaults = {**TINY_DEFAULTS, "dataroot": str(tmp_path / "scenes"), "steps": 2, "probe_every": 2}
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump({"name": "tiny", "kind": "distill", "description": "2 ranks", "defaults": defaults,
                                     "grid": {"loss": [{"name": "contrastive", "params": {"tau": 0.07}}],
                                              "seed": [0]}}))  # fmt: skip
    done = subprocess.run(
        [*TORCHRUN, "--nproc_per_node", "2", "-m", "bench.run", "--suite", str(suite), "--out", str(tmp_path / "out"),
         "--no-progress"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FutureWarning" not in done.stderr, done.stderr[-3000:]
