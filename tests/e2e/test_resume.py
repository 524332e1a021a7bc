"""An interrupted run resumes from its last checkpoint: kill ``python -m bench.run`` mid-training (SIGKILL),
run the same command again, and get exactly what an uninterrupted run gets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.run import main

REPO = Path(__file__).resolve().parents[2]
RUN = "contrastive-tau0.07-s0"


def _argv(suite: Path, out: Path) -> list[str]:
    return ["--suite", str(suite), "--out", str(out), "--only", "contrastive", "--steps", "40", "--no-progress"]


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tiny_suite, tmp_path):
    out = tmp_path / "killed"
    ckpt = out / RUN / "checkpoint.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.run", *_argv(tiny_suite, out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert ckpt.is_file(), "the run never wrote a checkpoint"
    assert not (out / RUN / "metrics.json").exists(), "the run finished before it could be killed"
    stopped_at = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < stopped_at < 40

    assert main(_argv(tiny_suite, out)) == 0  # resumes
    reference = tmp_path / "uninterrupted"
    assert main(_argv(tiny_suite, reference)) == 0

    resumed = json.loads((out / RUN / "metrics.json").read_text())
    straight = json.loads((reference / RUN / "metrics.json").read_text())
    for key, value in straight["geometry"].items():
        assert resumed["geometry"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert resumed["zero_shot"]["miou"] == pytest.approx(straight["zero_shot"]["miou"], abs=1e-9)
    assert (out / RUN / "trajectory.csv").read_text().splitlines()[0] == "step,loss,lr,U,T,G"
    rows_resumed = (out / RUN / "trajectory.csv").read_text().splitlines()
    rows_straight = (reference / RUN / "trajectory.csv").read_text().splitlines()
    assert len(rows_resumed) == len(rows_straight) == 1 + 1 + 10
    for a, b in zip(rows_resumed[1:], rows_straight[1:], strict=True):
        assert [float(x) for x in a.split(",")] == pytest.approx(
            [float(x) for x in b.split(",")], rel=1e-6, nan_ok=True
        )


@pytest.mark.slow
def test_killed_during_evaluation_resumes_to_byte_identical_files(tiny_suite, tmp_path):
    out = tmp_path / "killed"
    ckpt = out / RUN / "checkpoint.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.run", *_argv(tiny_suite, out)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if ckpt.is_file() and torch.load(ckpt, weights_only=False)["step"] == 40:
                break  # training is over: the run is evaluating
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / RUN / "metrics.json").exists(), "the run finished before it could be killed"
    assert main(_argv(tiny_suite, out)) == 0  # resumes from the final checkpoint: evaluation only
    for name in ("first", "second"):  # two uninterrupted runs: the same seed gives the same bytes
        assert main(_argv(tiny_suite, tmp_path / name)) == 0
    for file in ("metrics.json", "features.npz", "trajectory.csv"):
        reference = (tmp_path / "first" / RUN / file).read_bytes()
        assert (tmp_path / "second" / RUN / file).read_bytes() == reference, file
        assert (out / RUN / file).read_bytes() == reference, file


def test_jobs_run_the_suite_in_parallel_processes_with_the_same_results(tiny_suite, tiny_runs, tmp_path, capsys):
    out = tmp_path / "jobs"
    assert main(["--suite", str(tiny_suite), "--out", str(out), "--jobs", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "relational-lam1.0-s0" in printed.split("[2/2]")[-1]  # the results table of every run
    assert "[1/2]" in printed and "[2/2]" in printed and printed.count(" finished (") == 2  # one log line per run
    assert "2 runs in" in printed and "(0 already finished, skipped)" in printed  # the workers trained both
    for run in ("contrastive-tau0.07-s0", "relational-lam1.0-s0"):
        one = json.loads((tiny_runs / run / "metrics.json").read_text())
        two = json.loads((out / run / "metrics.json").read_text())
        for key in ("U", "T", "G"):  # 1 thread per job against the session's threads: rounding, grown by training
            assert two["geometry"][key] == pytest.approx(one["geometry"][key], rel=2e-3), (run, key)
        assert (out / run / "timing.json").is_file()
    assert not list(out.glob(".*.lock")) and not list(out.glob("*/.*.tmp"))  # every lock released, no leftovers
    assert main(["--suite", str(tiny_suite), "--out", str(out), "--jobs", "0"]) == 2


def test_a_claimed_run_is_left_to_its_worker(tiny_suite, tiny_runs, tmp_path, capsys):
    from bench.results import RunLock

    out = tmp_path / "claimed"
    held = RunLock(out / "relational-lam1.0-s0")  # another worker's
    assert held.acquire() and not RunLock(out / "relational-lam1.0-s0").acquire()
    argv = ["--suite", str(tiny_suite), "--out", str(out), "--no-progress", "--claim-runs"]
    try:
        assert main(argv) == 0  # this worker trains the free run only, leaving the held one silently
    finally:
        held.release()
    assert (out / "contrastive-tau0.07-s0" / "metrics.json").is_file()
    assert not (out / "relational-lam1.0-s0").exists()
