"""Fixtures shared by every test folder: a tiny open_clip ViT registered under a test name, the synthetic world at
small camera resolution, the synthetic teacher, the real nuScenes keyframe of tests/data, and a tiny distill suite
(smaller than ``smoke``) with one finished run of it.

Every test under tests/e2e (``bench.run`` end to end, child processes, real training) is marked ``slow``:
``pytest -m "not slow"`` is the fast inner loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

E2E = Path(__file__).resolve().parent / "e2e"
NUSCENES_SAMPLE = Path(__file__).resolve().parent / "data" / "nuscenes-sample"
"""The real keyframe's dataroot (read-only)."""


def pytest_collection_modifyitems(items):
    """Mark every test under tests/e2e ``slow``."""
    for item in items:
        if E2E in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.slow)


TINY_ARCH = "tiny-test-ViT"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
"""A 2-block ViT with patch size 8 and a 1-layer text tower, using CLIP's bundled BPE tokenizer."""


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory) -> str:
    """Register :data:`TINY_CONFIG` with open_clip under :data:`TINY_ARCH`."""
    from models.teachers._torchvision_shim import import_open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CONFIG))
    import_open_clip().add_model_config(folder)
    return TINY_ARCH


SMALL_WIDTH, SMALL_HEIGHT = 160, 96


def small_world(variant: str = "nuscenes"):
    """The variant's synthetic world with cameras rendered at 160 x 96 pixels (fast tests)."""
    from dataclasses import replace

    from bench.data.synthetic import VARIANTS

    cfg = VARIANTS[variant]
    return replace(cfg, rig=cfg.rig.with_resolution(SMALL_WIDTH, SMALL_HEIGHT))


@pytest.fixture(scope="session")
def small_config():
    """``small_config(variant)``: :func:`small_world`, as a fixture."""
    return small_world


@pytest.fixture(scope="module")
def teacher():
    """The synthetic teacher with its default parameters (one per test module)."""
    from models.teachers import build_teacher

    return build_teacher("synthetic")


@pytest.fixture(scope="session")
def nuscenes_sample() -> Path:
    """The real keyframe's dataroot (read-only)."""
    return NUSCENES_SAMPLE


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
