"""Shared fixtures of the data tests: small synthetic scenes generated once per session, and copies of the
real nuScenes keyframe's dataroot."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from bench.data.synthetic import VARIANTS, SyntheticConfig, generate_scene

NUSCENES_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "nuscenes-sample"
SMALL_WIDTH, SMALL_HEIGHT = 160, 96


def _small_config(variant: str = "nuscenes") -> SyntheticConfig:
    cfg = VARIANTS[variant]
    return replace(cfg, rig=cfg.rig.with_resolution(SMALL_WIDTH, SMALL_HEIGHT))


@pytest.fixture(scope="session")
def small_config():
    """``small_config(variant)``: the variant's world with cameras rendered at 160 x 96 pixels (fast tests)."""
    return _small_config


@pytest.fixture(scope="session")
def ten_scenes():
    """Ten in-distribution scenes (seeds 0..9) at reduced camera resolution."""
    cfg = _small_config()
    return [generate_scene(seed, "nuscenes", cfg) for seed in range(10)]


@pytest.fixture(scope="session")
def nuscenes_sample() -> Path:
    """The real keyframe's dataroot (read-only)."""
    return NUSCENES_SAMPLE


@pytest.fixture
def nuscenes_copy(tmp_path: Path) -> Path:
    """A writable copy of the real keyframe's dataroot."""
    root = tmp_path / "nuscenes"
    shutil.copytree(NUSCENES_SAMPLE, root)
    return root
