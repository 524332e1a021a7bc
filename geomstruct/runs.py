"""Reading run directories written by any harness (DESIGN.md section 4), for the reports.

A run directory holds ``config.json``, ``metrics.json`` (written last), ``trajectory.csv`` and array files.
Only these files are read, so reports work on results copied from any machine. Problems (a folder without
metrics, an unreadable file) are collected as messages, never fatal: whatever can be drawn is still drawn.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
TRAJECTORY_FILE = "trajectory.csv"


@dataclass
class Run:
    """One finished run: its folder, configuration, metrics and (when present) its trajectory."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    trajectory: pd.DataFrame | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The run's folder name."""
        return self.path.name

    @property
    def kind(self) -> str:
        """``toy`` for the toy experiment, else ``distill``."""
        return str(self.metrics.get("kind", self.config.get("kind", "distill")))

    @property
    def loss(self) -> str:
        """The loss name."""
        return str(self.metrics.get("loss", self.config.get("loss", "?")))

    @property
    def seed(self) -> int:
        """The run's seed."""
        return int(self.metrics.get("seed", self.config.get("seed", 0)))

    @property
    def loss_label(self) -> str:
        """The loss with its parameters, e.g. ``contrastive (tau=0.07)``."""
        params = self.metrics.get("params") or {}
        if not params:
            return self.loss
        return f"{self.loss} ({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _candidate_dirs(roots: Iterable[Path]) -> list[Path]:
    found: set[Path] = set()
    for root in roots:
        for marker in (CONFIG_FILE, METRICS_FILE):
            if (root / marker).is_file():
                found.add(root)
            found.update(p.parent for p in root.rglob(marker))
    return sorted(found)


def load_runs(roots: Iterable[Path]) -> tuple[list[Run], list[str]]:
    """Every run directory under ``roots`` (searched recursively).

    Returns ``(runs, problems)``: the runs whose ``metrics.json`` could be read, and a message for every
    folder that could not be used (missing or invalid files) or a missing root.
    """
    problems: list[str] = []
    existing = []
    for root in map(Path, roots):
        if root.is_dir():
            existing.append(root)
        else:
            problems.append(f"{root}: no such folder")
    runs: list[Run] = []
    for folder in _candidate_dirs(existing):
        metrics_path = folder / METRICS_FILE
        if not metrics_path.is_file():
            problems.append(f"{folder}: no {METRICS_FILE} (unfinished or failed run); skipped")
            continue
        try:
            metrics = _read_json(metrics_path)
            config = _read_json(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else {}
        except ValueError as exc:
            problems.append(f"{exc}; skipped")
            continue
        run = Run(path=folder, config=config, metrics=metrics)
        traj = folder / TRAJECTORY_FILE
        if traj.is_file():
            try:
                run.trajectory = pd.read_csv(traj)
            except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                run.problems.append(f"{traj}: unreadable ({exc})")
        else:
            run.problems.append(f"{folder}: no {TRAJECTORY_FILE}")
        problems.extend(run.problems)
        runs.append(run)
    return runs, problems
