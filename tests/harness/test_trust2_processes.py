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

import bench

REPO = Path(bench.__file__).resolve().parents[1]
"""The checkout whose code the tests run (the child processes import it too)."""
NUSCENES_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "nuscenes-sample"
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
    monkeypatch.setattr(nuscenes, "_INDEXES", {})
    with pytest.warns(RuntimeWarning, match=r"could not be built in a child process \(child broke\).*6\.7 GB"):
        index = nuscenes.keyframe_index(NUSCENES_SAMPLE, "v1.0-mini", tmp_path)
    assert len(index.tokens) == 1
    assert len(list(tmp_path.glob("nuscenes-v1.0-mini-*.npz"))) == 1
