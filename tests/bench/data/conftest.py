"""Shared fixtures of the data tests: small synthetic scenes generated once per session, and writable copies of
the real nuScenes keyframe's dataroot (``small_config`` and the read-only ``nuscenes_sample`` are in
tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.data.synthetic import generate_scene
from tests.conftest import NUSCENES_SAMPLE, small_world


@pytest.fixture(scope="session")
def ten_scenes():
    """Ten in-distribution scenes (seeds 0..9) at reduced camera resolution."""
    cfg = small_world()
    return [generate_scene(seed, "nuscenes", cfg) for seed in range(10)]


@pytest.fixture
def nuscenes_copy(tmp_path: Path) -> Path:
    """A writable copy of the real keyframe's dataroot."""
    root = tmp_path / "nuscenes"
    shutil.copytree(NUSCENES_SAMPLE, root)
    return root
