"""Fixtures of the harness tests: a tiny distill suite (smaller than ``smoke``) and one finished run of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY_DEFAULTS = {
    "dataset": "synthetic",
    "train_scenes": 3,
    "val_scenes": 1,
    "ood_train_scenes": 1,
    "ood_val_scenes": 1,
    "crop_radius": 6.0,
    "teacher": "synthetic",
    "student_overrides": {"init_dim": 8, "planes": [8, 8, 8, 8, 8, 8, 8, 8]},
    "voxel_size": 0.25,
    "steps": 12,
    "batch_size": 2,
    "n_pairs": 256,
    "lr": 0.5,
    "checkpoint_every": 2,
    "probe_every": 4,
    "probe_scenes": 1,
    "probe_per_class": 30,
    "features_per_class": 60,
    "lp_steps": 5,
    "lp_points_per_scan": 200,
    "lp_batch_points": 256,
    "ft_steps": 2,
}


def write_suite(path: Path, dataroot: Path, losses: list, seeds: list[int], **overrides) -> Path:
    """Write a tiny distill suite YAML at ``path`` and return it."""
    suite = {
        "name": path.stem,
        "kind": "distill",
        "description": "tiny test suite",
        "defaults": {**TINY_DEFAULTS, "dataroot": str(dataroot), **overrides},
        "grid": {"loss": losses, "seed": seeds},
    }
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory) -> Path:
    """A two-run suite (contrastive, relational) on a tiny synthetic world cached in a temporary folder."""
    root = tmp_path_factory.mktemp("harness")
    losses = [{"name": "contrastive", "params": {"tau": 0.07}}, {"name": "relational", "params": {"lam": 1.0}}]
    return write_suite(root / "tiny.yaml", root / "scenes", losses, [0])


@pytest.fixture(scope="session")
def tiny_runs(tiny_suite, tmp_path_factory) -> Path:
    """The output folder of one complete run of :func:`tiny_suite`."""
    from bench.run import main

    out = tmp_path_factory.mktemp("tiny_runs")
    assert main(["--suite", str(tiny_suite), "--out", str(out), "--no-progress"]) == 0
    return out
