"""geomstruct.report, trust round 2: a run counted once however often it is found, stale temporary folders of
killed reports removed (never a live report's), an output folder that cannot be written refused in one line, and
NaN metrics reported."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geomstruct import report as geo_report
from geomstruct.runs import DuplicateRunError, distinct_runs, load_runs
from tests.geomstruct.conftest import write_run_folder

PROTOCOLS = ("zero_shot", "linear_probe", "few_shot", "few_shot_ood")
CONFIGS = (("contrastive", {"tau": 0.07}), ("similarity", {}), ("relational", {"lam": 1.0}), ("regression", {}))
N_BOOT = 200


def _write_run(suite: Path, loss: str, params: dict, seed: int) -> Path:
    """A finished distill run in the documented schema (no arrays: the figures that need them are left out)."""
    rng = np.random.default_rng(zlib.crc32(f"{loss}-{seed}".encode()))
    folder = suite / f"{loss}{''.join(f'-{k}{v}' for k, v in params.items())}-s{seed}"
    u3, u2, t3, t2 = rng.uniform(0.5, 2.0), 1.5, rng.uniform(0.3, 0.9), 0.6
    geometry = {"U": u3, "T": t3, "G": rng.uniform(0, 1), "dU": u3 - u2, "dT": t3 - t2,
                "S": float(np.hypot(u3 - u2, t3 - t2)), "U_2d": u2, "T_2d": t2}  # fmt: skip
    metrics = {"kind": "distill", "loss": loss, "params": params, "seed": seed, "teacher": "synthetic-abc",
               "dataset": "synthetic", "geometry": geometry}  # fmt: skip
    for protocol in PROTOCOLS:
        metrics[protocol] = {"miou": rng.uniform(0.1, 0.6), "per_class": {"a": rng.uniform(0, 1), "b": None}}
    config = {"kind": "distill", "loss": loss, "seed": seed, "steps": 10}
    trajectory = {"step": [0, 10], "loss": [np.nan, 0.5], "U": [1.0, u3], "T": [0.5, t3], "G": [0.5, 0.4]}
    return write_run_folder(folder, metrics, config, trajectory)


@pytest.fixture
def suite(tmp_path) -> Path:
    """``A/base``: 4 configurations x 2 seeds."""
    folder = tmp_path / "A" / "base"
    for loss, params in CONFIGS:
        for seed in (0, 1):
            _write_run(folder, loss, params, seed)
    return folder


def _edit_metrics(folder: Path, edit) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    edit(metrics)
    (folder / "metrics.json").write_text(json.dumps(metrics))


# distinct runs


@pytest.mark.slow
def test_the_same_suite_under_two_roots_counts_every_run_once(suite, tmp_path, capsys):
    copy = shutil.copytree(suite, tmp_path / "B" / "base")
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(suite), str(copy), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    summary = pd.read_csv(out / "summary.csv").set_index("label")
    assert (summary["n"] == 2).all()  # two seeds, not four
    assert (summary["U_std"] > 0).all()
    assert all(str(copy) not in folders for folders in summary["runs"])  # counted from the first folder
    corr = pd.read_csv(out / "correlations.csv")
    assert set(corr.loc[corr["over"] == "students", "n"]) == {8}
    assert set(corr.loc[corr["over"] == "configurations", "n"]) == {4}
    claims = pd.read_csv(out / "claims.csv")
    assert "16" not in set(claims["n"].astype(str))
    same = [line for line in err.splitlines() if "are the same run" in line]
    assert len(same) == 8
    first = suite / "contrastive-tau0.07-s0"
    assert any(first.as_posix() in line and (copy / first.name).as_posix() in line for line in same)
    assert "are the same run" in (out / "index.html").read_text()


def test_the_same_configuration_and_seed_with_different_metrics_is_refused(suite, tmp_path, capsys):
    copy = shutil.copytree(suite, tmp_path / "B" / "base")
    _edit_metrics(copy / "similarity-s1", lambda m: m["geometry"].update(U=9.0))
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(suite), str(copy), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (suite / "similarity-s1").as_posix() in err and (copy / "similarity-s1").as_posix() in err
    assert "different metrics.json" in err and "nothing was written" in err
    assert not out.exists()


def test_one_folder_reached_twice_is_one_run_without_a_warning(suite, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(suite.parent)
    (tmp_path / "link").symlink_to(suite)
    runs, problems = load_runs([Path("base"), suite, tmp_path / "link", suite.parent])
    assert len(runs) == 8 and not problems
    kept, notes = distinct_runs(runs)
    assert len(kept) == 8 and not notes


def test_distinct_runs_keeps_other_seeds_and_configurations(suite, tmp_path):
    copy = shutil.copytree(suite, tmp_path / "B" / "base")
    shutil.rmtree(copy / "relational-lam1.0-s0")
    _edit_metrics(copy / "relational-lam1.0-s1", lambda m: m.update(seed=7))  # another seed: a distinct run
    (copy / "relational-lam1.0-s1" / "config.json").write_text(json.dumps({"kind": "distill", "loss": "relational",
                                                                           "seed": 7, "steps": 10}))  # fmt: skip
    _edit_metrics(copy / "regression-s0", lambda m: m["geometry"].update(U=9.0))
    (copy / "regression-s0" / "config.json").write_text(json.dumps({"kind": "distill", "loss": "regression",
                                                                    "seed": 0, "steps": 20}))  # fmt: skip
    runs, _ = load_runs([suite, copy])
    kept, notes = distinct_runs(runs)
    assert len(runs) == 15 and len(kept) == 8 + 2 and len(notes) == 5
    with pytest.raises(DuplicateRunError, match="similarity-s0"):
        _edit_metrics(copy / "similarity-s0", lambda m: m.update(final_loss=1.0))
        distinct_runs(load_runs([suite, copy])[0])


# stale temporary folders


def _hold_partial(target: Path) -> subprocess.Popen:
    """A process that creates a temporary folder next to ``target`` as a report does (``.<name>.partial-*``), holds
    the lock on it that a writing report holds (``flock`` of the folder), then waits."""
    code = (
        "import fcntl, os, tempfile, time; "
        f"d = tempfile.mkdtemp(prefix='.{target.name}.partial-', dir={str(target.parent)!r}); "
        "fd = os.open(d, os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); print(d, flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, "the helper process did not create its folder"
    proc.partial = Path(line)  # type: ignore[attr-defined]
    return proc


@pytest.mark.slow
def test_stale_partial_folders_of_dead_reports_are_removed_live_ones_kept(suite, tmp_path):
    out = tmp_path / "out" / "reports"
    out.parent.mkdir()
    unlocked = out.parent / ".reports.partial-oldstyle"  # left by a report killed before it was locked
    (unlocked / "toy").mkdir(parents=True)
    (unlocked / "pca.png").write_bytes(b"x")
    killed = _hold_partial(out)
    live = _hold_partial(out)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        (killed.partial / "summary.md").write_text("half a table")
        other = out.parent / ".other.partial-abc"  # another output folder's: not this report's to judge
        other.mkdir()
        assert geo_report.build_report([suite], out, n_boot=N_BOOT)[0]
        left = sorted(p.name for p in out.parent.iterdir())
        assert left == sorted(["reports", other.name, live.partial.name])
        assert live.poll() is None and live.partial.is_dir()
    finally:
        for proc in (killed, live):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
    geo_report.build_report([suite], out, n_boot=N_BOOT)  # its writer is dead now: removed
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["reports", other.name])


def test_a_partial_folder_locked_in_this_process_is_kept(suite, tmp_path):
    out = tmp_path / "reports"
    staging, fd = geo_report._make_staging(out)
    try:
        assert geo_report._remove_stale_partials(out) == []
        assert staging.is_dir()
    finally:
        os.close(fd)
    assert geo_report._remove_stale_partials(out) == [staging]
    assert not staging.exists()


# an output folder that cannot be written


def _one_error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    return errors[0]


@pytest.mark.slow
def test_a_full_disk_is_one_error_line_naming_the_folder_exit_2(suite, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out" / "reports"
    assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(geo_report, "plot_trajectories", full)
    assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert out.as_posix() in line and os.strerror(errno.ENOSPC) in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["reports"]


@pytest.mark.slow
def test_a_file_that_cannot_be_written_is_one_error_line(suite, tmp_path, capsys, monkeypatch):
    out = tmp_path / "reports"

    def denied(folder, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder / "index.html"))

    monkeypatch.setattr(geo_report, "write_index", denied)
    assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--out {out.as_posix()}" in line and "index.html" in line
    assert not out.exists() and list(tmp_path.glob(".reports.partial-*")) == []


def test_a_read_only_output_folder_is_refused_before_anything_is_written(suite, tmp_path, capsys, monkeypatch):
    out = tmp_path / "reports"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != out and real_access(path, mode))
    assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert out.as_posix() in line and "not writable" in line
    assert list(tmp_path.glob(".reports.*")) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_really_read_only_output_folder_is_refused(suite, tmp_path, capsys):
    out = tmp_path / "reports"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 2
    finally:
        out.chmod(0o755)
    assert out.as_posix() in _one_error_line(capsys.readouterr().err)


def test_an_error_that_is_not_the_outputs_still_raises(suite, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/elsewhere/cache.npz")

    monkeypatch.setattr(geo_report, "plot_trajectories", broken)
    with pytest.raises(FileNotFoundError):
        geo_report.main(["--runs", str(suite), "--out", str(tmp_path / "reports")])


# NaN metrics


@pytest.mark.slow
def test_nan_metrics_are_shown_as_dashes_with_a_warning_naming_run_and_metric(suite, tmp_path, capsys):
    for seed in (0, 1):
        _edit_metrics(suite / f"relational-lam1.0-s{seed}", lambda m: m["geometry"].update(U=float("nan")))
    _edit_metrics(suite / "similarity-s0", lambda m: m["zero_shot"].update(miou=float("inf")))
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    for seed in (0, 1):
        folder = (suite / f"relational-lam1.0-s{seed}").as_posix()
        assert any(folder in line and "geometry.U = NaN" in line for line in err.splitlines())
    assert any("similarity-s0" in line and "zero_shot.miou = Infinity" in line for line in err.splitlines())
    assert "geometry.U = NaN" in (out / "index.html").read_text()
    row = next(line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| relational"))
    assert row.split(" | ")[2] == "–"  # U, as before
    # a mean over fewer seeds than the row's n says so: similarity's zero-shot is the mean of its finite seed only
    row = next(line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| similarity"))
    assert "(1 of 2 seeds)" in row and row.count("of 2 seeds") == 1
