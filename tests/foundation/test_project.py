"""The README's set-up commands are exactly what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

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
