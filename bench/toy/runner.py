"""The toy experiment as a suite kind (``kind: toy``): resolve a run's configuration, run it into its folder.

A toy run writes ``config.json`` and ``environment.json``, then ``trajectory.csv``, ``snapshots.npz`` (the
outputs the figures draw) and, last, ``metrics.json`` (docs/run-folder.md).
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from bench.files import write_csv, write_npz
from bench.results import RunDir
from bench.toy.experiment import TRAJECTORY_COLUMNS, ToyConfig, run_toy
from geomstruct.run_folder import SNAPSHOT_FILE, TRAJECTORY_FILE, read_metrics


def resolve_toy(run: dict[str, Any], workspace: Any = None) -> dict[str, Any]:
    """The full configuration of a toy run; raises ``ValueError`` (naming the valid choices) on bad values. A toy
    run needs no set-up: ``workspace`` is not read."""
    fields = dict(run)
    if "snapshots" in fields:
        fields["snapshots"] = tuple(fields["snapshots"])
    try:
        return ToyConfig(**fields).resolved()
    except TypeError as exc:  # unknown or missing parameter names
        raise ValueError(f"bad toy run parameters: {exc}") from None
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None


def execute_toy(
    resolved: dict[str, Any],
    run_dir: RunDir,
    device: torch.device,
    progress: bool,
    workers: int = 0,
    workspace: Any = None,
) -> dict[str, Any]:
    """Run (or read, when finished) one toy run and return its metrics (``workers`` and ``workspace`` unused: the
    toy data are generated in memory)."""
    if run_dir.finished:
        run_dir.check_config(resolved)
        return read_metrics(run_dir.path)[0]
    run_dir.start(resolved, device)
    with tqdm(total=resolved["iterations"], desc=run_dir.path.name, leave=False, disable=not progress) as bar:
        metrics, trajectory, arrays = run_toy(resolved, device, on_step=lambda _: bar.update())
    write_csv(run_dir.path / TRAJECTORY_FILE, trajectory, TRAJECTORY_COLUMNS)
    write_npz(run_dir.path / SNAPSHOT_FILE, **arrays)
    run_dir.finish(metrics)
    return metrics
