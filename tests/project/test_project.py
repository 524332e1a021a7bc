"""The README's set-up commands are exactly what CI runs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set-up", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README.md: the Set-up section has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_setup_is_two_commands_and_ci_runs_them_verbatim():
    commands = _setup_commands()
    assert len(commands) == 2, commands
    assert "pip install" in commands[0] and "-c constraints/cpu.txt" in commands[0]
    assert commands[1].endswith("pytest")
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci_lines, f".ci/run does not run the README command: {command}"


def test_constraints_pin_cpu_torch():
    pins = (ROOT / "constraints" / "cpu.txt").read_text()
    assert re.search(r"^torch==\d", pins, re.M) and re.search(r"^numpy<2", pins, re.M)


def test_study_runs_are_committed_without_their_heavy_files():
    # study/README.md: a run directory under study/ is committed with its records, never with its weights,
    # feature dump, snapshots or one-writer lock file (names taken from the code that writes them)
    from bench.distill import FEATURES_FILE
    from bench.results import ENVIRONMENT_FILE, LOCK_SUFFIX, TIMING_FILE, RunLock
    from bench.train import CHECKPOINT_FILE
    from geomstruct.runs import CONFIG_FILE, METRICS_FILE, SNAPSHOT_FILE, TRAJECTORY_FILE

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    run = Path("study/some-suite/contrastive-tau0.07-s0")
    lock = RunLock(run).path
    assert lock.name.endswith(LOCK_SUFFIX)
    heavy = [run / CHECKPOINT_FILE, run / FEATURES_FILE, run / SNAPSHOT_FILE, lock]
    kept = [run / name for name in (CONFIG_FILE, METRICS_FILE, TRAJECTORY_FILE, TIMING_FILE, ENVIRONMENT_FILE)]
    paths = [str(p) for p in heavy + kept]
    out = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == [str(p) for p in heavy]
