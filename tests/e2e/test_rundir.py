"""A run folder has one writer and is bound to a configuration only by its results: the folder lock (two
processes, a killed ``--jobs`` parent, stale temporaries and error files), checkpoints without a configuration
hash, runs failing before their first checkpoint, moved inputs, and the atomic writer's errors."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.config import DistillConfig
from bench.results import RunConflictError, RunDir, RunLock, read_config, write_json
from bench.run import main
from bench.train import accepted_hashes, config_hash, load_checkpoint
from tests.conftest import write_suite

REPO = Path(__file__).resolve().parents[2]
RUN = "contrastive-tau0.07-s0"
ME = f"pid {os.getpid()} on {socket.gethostname()}"


def _argv(suite: Path, out: Path, *extra: str) -> list[str]:
    return ["--suite", str(suite), "--out", str(out), "--run", RUN, "--no-progress", *extra]


# ---------------------------------------------------------------------------------------------- the folder lock


def test_a_run_folder_has_one_lock_holder_named_to_the_others(tmp_path):
    run = tmp_path / "out" / RUN
    first, second = RunLock(run), RunLock(run)
    assert first.acquire()
    assert first.path == tmp_path / "out" / f".{RUN}.lock"
    assert not second.acquire()  # another open file: refused, even in the same process
    assert second.holder() == ME and second.held_elsewhere() == ME
    with pytest.raises(RuntimeError, match=rf"run {RUN} is being written by {ME}"):
        with RunDir(run).lock():
            pass
    first.release()
    assert not first.path.exists()  # released: no lock file left
    assert second.held_elsewhere() is None and second.acquire()
    second.release()


def test_the_lock_dies_with_its_process(tmp_path):
    run = tmp_path / "out" / RUN
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from bench.results import RunLock; assert RunLock({str(run)!r}).acquire(); "
            "print('held', flush=True); import time; time.sleep(120)",
        ],  # fmt: skip
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert RunLock(run).held_elsewhere() == f"pid {holder.pid} on {socket.gethostname()}"
        holder.send_signal(signal.SIGKILL)
    finally:
        holder.wait()
    lock = RunLock(run)
    assert lock.path.exists()  # the killed holder's file stays, but its lock went with it
    assert lock.acquire()
    lock.release()


def test_taking_the_lock_removes_a_killed_writers_leftovers(tmp_path):
    run = tmp_path / RUN
    run.mkdir()
    leftovers = [run / ".trajectory.csv.k2j4h1.tmp", run / ".checkpoint.pt.a8b9c0.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    (run / "config.json").write_text("{}")
    (run / "metrics.json").write_text("{}")
    (run / "error.txt").write_text("an earlier attempt's error")  # stale: the run finished
    with RunDir(run).lock():
        assert not any(path.exists() for path in leftovers)
        assert not (run / "error.txt").exists()
        assert (run / "config.json").is_file() and (run / "metrics.json").is_file()


def test_a_finished_run_never_gets_an_error_file(tmp_path):
    run = RunDir(tmp_path / RUN)
    assert run.fail("boom") == run.path / "error.txt"  # an unfinished run records its failure
    run.finish({"kind": "distill"})
    assert not (run.path / "error.txt").exists()
    assert run.fail("a later attempt's error") is None  # beside metrics.json: never written
    assert not (run.path / "error.txt").exists()


def test_a_second_bench_run_leaves_a_held_run_alone(tiny_suite, tmp_path, capsys):
    out = tmp_path / "out"
    held = RunLock(out / RUN)  # another bench.run (here: this process, through another open file) writes it
    assert held.acquire()
    try:
        assert main(_argv(tiny_suite, out, "--steps", "4")) == 3
    finally:
        held.release()
    captured = capsys.readouterr()
    assert f"run {RUN} is being written by {ME}" in captured.err
    assert not (out / RUN).exists()  # not touched: no config.json, no error.txt


def _dead(pid: int) -> bool:
    """True when ``pid`` has exited (gone, or a zombie waiting for a reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_a_jobs_parent_kills_its_workers(tiny_suite, tmp_path):
    out = tmp_path / "jobs"
    argv = ["--suite", str(tiny_suite), "--out", str(out), "--jobs", "2", "--steps", "400", "--no-progress"]
    parent = subprocess.Popen([sys.executable, "-m", "bench.run", *argv], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)  # fmt: skip
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        while len(workers) < 2 and parent.poll() is None and time.monotonic() < deadline:
            for lock in out.glob(".*.lock") if out.is_dir() else []:
                text = lock.read_text().split()
                if text and text[0].isdigit():
                    workers.add(int(text[0]))
            time.sleep(0.05)
        assert len(workers) == 2, "the two workers never took their runs' locks"
        assert parent.pid not in workers
        parent.send_signal(signal.SIGKILL)
    finally:
        parent.wait()
    deadline = time.monotonic() + 30
    while not all(_dead(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in workers if not _dead(pid)]
    for pid in alive:  # do not leave them running whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert not alive, "workers of the killed --jobs parent went on training"
    # free for the rerun: the kernel drops a killed worker's lock once its last thread has exited, which may come
    # a moment after its main thread shows as a zombie (on a loaded machine)
    locks = [RunDir(out / name).lock() for name in ("contrastive-tau0.07-s0", "relational-lam1.0-s0")]
    deadline = time.monotonic() + 10
    while any(lock.held_elsewhere() for lock in locks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [lock.held_elsewhere() for lock in locks] == [None, None]


# ------------------------------------------------------------------------------- checkpoints without a hash


def _similarity(**fields: object) -> DistillConfig:
    return DistillConfig(loss="similarity", seed=0, **fields)


def test_a_checkpoint_without_a_hash_needs_its_folders_config(tmp_path):
    cfg = _similarity()
    folder = tmp_path / "similarity-s0"
    folder.mkdir()
    ckpt = folder / "checkpoint.pt"
    torch.save({"student": {}, "step": 2}, ckpt)  # the earlier format: no config_hash
    with pytest.raises(ValueError, match="carries no configuration hash") as refused:
        load_checkpoint(ckpt, accepted_hashes(cfg, folder), vouched_by=folder / "config.json")
    assert str(ckpt) in str(refused.value) and "remove it" in str(refused.value)
    with pytest.raises(ValueError, match="carries no configuration hash"):
        load_checkpoint(ckpt, config_hash(cfg))  # nothing vouches for it
    write_json(folder / "config.json", DistillConfig(loss="contrastive", seed=0).resolved())  # another run's
    with pytest.raises(ValueError, match=r"config.json is another configuration"):
        load_checkpoint(ckpt, accepted_hashes(cfg, folder), vouched_by=folder / "config.json")
    write_json(folder / "config.json", cfg.resolved())  # the run that wrote it: resumes
    assert load_checkpoint(ckpt, accepted_hashes(cfg, folder), vouched_by=folder / "config.json")["step"] == 2
    assert load_checkpoint(ckpt)["step"] == 2  # no expected hash (reading a finished run's weights): loads


def test_another_runs_checkpoint_without_a_hash_is_refused_by_the_harness(tiny_suite, tmp_path, capsys):
    out = tmp_path / "out"
    (out / RUN).mkdir(parents=True)
    torch.save({"student": {}, "step": 2}, out / RUN / "checkpoint.pt")  # e.g. similarity's, older format
    assert main(_argv(tiny_suite, out, "--steps", "4")) == 2
    err = capsys.readouterr().err
    assert f"{out / RUN / 'checkpoint.pt'} carries no configuration hash" in err
    assert not (out / RUN / "metrics.json").exists() and not (out / RUN / "config.json").exists()


# ------------------------------------------------------------------------------- binding a folder


def test_a_run_failing_before_its_first_checkpoint_leaves_its_folder_free(tiny_suite, tmp_path, monkeypatch, capsys):
    def broken(name):
        def loss(k, q, **params):
            raise RuntimeError("the loss failed at step 1")

        return loss

    out = tmp_path / "out"
    first = write_suite(tmp_path / "first.yaml", tiny_suite.parent / "scenes",
                        [{"name": "contrastive", "params": {"tau": 0.07}}], [0], lr=0.5)  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr("bench.train.get_loss", broken)
        assert main(_argv(first, out, "--steps", "4")) == 2
    assert "the loss failed at step 1" in capsys.readouterr().err
    assert not (out / RUN / "config.json").exists() and (out / RUN / "error.txt").is_file()
    fixed = write_suite(tmp_path / "fixed.yaml", tiny_suite.parent / "scenes",
                        [{"name": "contrastive", "params": {"tau": 0.07}}], [0], lr=0.3)  # fmt: skip
    assert main(_argv(fixed, out, "--steps", "4")) == 0  # the corrected rerun is not refused
    assert read_config(out / RUN)["lr"] == 0.3
    assert (out / RUN / "metrics.json").is_file() and not (out / RUN / "error.txt").exists()


def test_a_folder_without_results_is_rebound_and_one_with_results_is_not(tmp_path, capsys):
    run = RunDir(tmp_path / RUN)
    old, new = _similarity(lr=0.5).resolved(), _similarity(lr=0.3).resolved()
    write_json(run.path / "config.json", old)  # bound by an attempt that failed before writing anything
    (run.path / "error.txt").write_text("failed")
    (run.path / ".checkpoint.pt.x1.tmp").write_bytes(b"half")  # a temporary is no result
    assert run.config_differences(new) == ["lr"]
    run.check_config(new)  # no conflict: nothing to protect
    run.start(new, torch.device("cpu"))
    assert read_config(run.path)["lr"] == 0.3
    assert "rebound to this run's configuration" in capsys.readouterr().err
    (run.path / "checkpoint.pt").write_bytes(b"state")
    with pytest.raises(RunConflictError, match="differs in: lr"):
        run.check_config(old)


# ------------------------------------------------------------------------------- locations are no identity


def _legacy_hash(resolved: dict) -> str:
    """What checkpoints written before locations were left out carry."""
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_moved_inputs_are_no_configuration_difference(tmp_path):
    here = {"dataroot": "/a/scenes", "ood_dataroot": "/a/ood", "feature_cache": "/a/f", "superpixel_cache": "/a/s"}
    there = {key: value.replace("/a/", "/b/") for key, value in here.items()}
    old, moved = _similarity(**here).resolved(), _similarity(**there).resolved()
    run = RunDir(tmp_path / "similarity-s0")
    write_json(run.path / "config.json", old)
    (run.path / "checkpoint.pt").write_bytes(b"state")  # a folder with results
    assert run.config_differences(moved) == []
    run.check_config(moved)
    assert run.config_differences(_similarity(**there, lr=0.3).resolved()) == ["lr"]
    assert config_hash(old) == config_hash(moved) == config_hash(_similarity(**there))
    assert config_hash(old) != config_hash(_similarity(**here, lr=0.3))
    weights = {**old, "teacher": "clip", "clip_checkpoint": "/a/w.pt", "clip_checkpoint_sha256": "abc"}
    write_json(run.path / "config.json", weights)
    assert run.config_differences({**weights, "clip_checkpoint": "/b/w.pt"}) == []  # same content elsewhere
    assert config_hash(weights) == config_hash({**weights, "clip_checkpoint": "/b/w.pt"})
    assert run.config_differences({**weights, "clip_checkpoint_sha256": "def"}) == ["clip_checkpoint_sha256"]
    unhashed = {**weights, "clip_checkpoint_sha256": None}
    write_json(run.path / "config.json", unhashed)
    assert run.config_differences({**unhashed, "clip_checkpoint": "/b/w.pt"}) == ["clip_checkpoint"]  # no identity


def test_a_checkpoint_resumes_after_its_inputs_moved(tmp_path):
    here, there = {"dataroot": "/a/scenes", "feature_cache": "/a/f"}, {"dataroot": "/b/scenes", "feature_cache": "/b/f"}
    written, moved = _similarity(**here), _similarity(**there)
    folder = tmp_path / "similarity-s0"
    folder.mkdir()
    write_json(folder / "config.json", written.resolved())
    ckpt = folder / "checkpoint.pt"
    for carried in (config_hash(written), _legacy_hash(written.flat())):  # this code's hash, the earlier one
        torch.save({"student": {}, "step": 2, "config_hash": carried}, ckpt)
        state = load_checkpoint(ckpt, accepted_hashes(moved, folder), vouched_by=folder / "config.json")
        assert state["step"] == 2
    torch.save({"student": {}, "step": 2, "config_hash": config_hash(_similarity(**here, lr=0.3))}, ckpt)
    with pytest.raises(ValueError, match="was written by another configuration"):
        load_checkpoint(ckpt, accepted_hashes(moved, folder), vouched_by=folder / "config.json")


# ------------------------------------------------------------------------------- file modes, write errors


def test_synthetic_scenes_follow_the_umask(tmp_path):
    from bench.data.synthetic.dataset import SyntheticDataset

    old = os.umask(0o022)
    try:
        SyntheticDataset(tmp_path, "val", sizes={"val": 1}, progress=False)
    finally:
        os.umask(old)
    (scene,) = tmp_path.rglob("*.npz")
    assert scene.stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch, call):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = tmp_path / "run" / "metrics.json"
    monkeypatch.setattr(os, call, full)
    with pytest.raises(OSError) as raised:
        write_json(target, {"x": 1})
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC
    assert str(target) in str(raised.value) and "No space left on device" in str(raised.value)
    assert list((tmp_path / "run").iterdir()) == []  # no temporary, no target


def test_a_write_error_keeps_its_oserror_subclass(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "write", denied)
    with pytest.raises(PermissionError, match=re.escape(str(tmp_path / "a.json"))):
        write_json(tmp_path / "a.json", {"x": 1})
