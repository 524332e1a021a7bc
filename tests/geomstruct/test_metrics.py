"""Geometry metrics of docs/method.md#geometry-metrics against brute-force formulas and known values."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from geomstruct import metrics


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_uniformity(x: np.ndarray, t: float = 2.0) -> float:
    x = _unit(x)
    d2 = cdist(x, x, "sqeuclidean")
    off = ~np.eye(len(x), dtype=bool)
    return -math.log(np.exp(-t * d2[off]).mean())


def _brute_tolerance(x: np.ndarray, labels: np.ndarray) -> float:
    x = _unit(x)
    g = x @ x.T
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(x), dtype=bool)
    return g[same].mean()


@pytest.fixture(scope="module")
def points_2000():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 16, 2000)
    centres = rng.standard_normal((16, 32))
    x = centres[labels] + 0.8 * rng.standard_normal((2000, 32))
    y = x + 0.5 * rng.standard_normal((2000, 32)) + 0.3
    return x, y, labels


@pytest.mark.parametrize("block_size", [128, 700, 4096])
def test_uniformity_matches_brute_force(points_2000, block_size):
    x, _, _ = points_2000
    assert metrics.uniformity(x, block_size=block_size) == pytest.approx(_brute_uniformity(x), abs=1e-9)
    assert metrics.uniformity(x, t=0.5, block_size=block_size) == pytest.approx(_brute_uniformity(x, t=0.5), abs=1e-9)


def test_tolerance_matches_brute_force(points_2000):
    x, _, labels = points_2000
    assert metrics.tolerance(x, labels) == pytest.approx(_brute_tolerance(x, labels), abs=1e-9)


def test_modality_gap_and_alignment_match_brute_force(points_2000):
    x, y, _ = points_2000
    ux, uy = _unit(x), _unit(y)
    assert metrics.modality_gap(x, y) == pytest.approx(np.linalg.norm(ux.mean(0) - uy.mean(0)), abs=1e-9)
    assert metrics.alignment(x, y) == pytest.approx(((ux - uy) ** 2).sum(1).mean(), abs=1e-9)


def test_torch_and_numpy_inputs_agree(points_2000):
    x, y, labels = points_2000
    xt, yt, lt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(labels)
    assert metrics.uniformity(xt) == metrics.uniformity(x)
    assert metrics.tolerance(xt, lt) == metrics.tolerance(x, labels)
    assert metrics.modality_gap(xt, yt) == metrics.modality_gap(x, y)
    # float32 input: same value to float32 precision
    assert metrics.uniformity(xt.float()) == pytest.approx(metrics.uniformity(x), abs=1e-5)


def test_known_values():
    v = np.tile([[0.3, -1.0, 2.0]], (50, 1))
    assert metrics.uniformity(v) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(1)
    assert metrics.uniformity(rng.standard_normal((4000, 512))) == pytest.approx(4.0, abs=0.05)
    # one repeated vector per class: tolerance 1
    labels = np.repeat(np.arange(4), 10)
    per_class = rng.standard_normal((4, 8))
    assert metrics.tolerance(per_class[labels], labels) == pytest.approx(1.0, abs=1e-12)
    # antipodal pair in one class: tolerance -1; identical spaces: no gap, perfect alignment
    assert metrics.tolerance(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([0, 0])) == pytest.approx(-1.0)
    x = rng.standard_normal((30, 5))
    assert metrics.modality_gap(x, 3 * x) == pytest.approx(0.0, abs=1e-12)
    assert metrics.alignment(x, 3 * x) == pytest.approx(0.0, abs=1e-12)


def test_structural_gap_and_geometry(points_2000):
    x, y, labels = points_2000
    gap = metrics.structural_gap(x, y, labels)
    assert gap.dU == pytest.approx(_brute_uniformity(x) - _brute_uniformity(y), abs=1e-9)
    assert gap.dT == pytest.approx(_brute_tolerance(x, labels) - _brute_tolerance(y, labels), abs=1e-9)
    assert gap.S == pytest.approx(math.sqrt(gap.dU**2 + gap.dT**2))
    geo = metrics.geometry(x, y, labels)
    assert set(geo) == {"U", "T", "G", "A", "dU", "dT", "S", "U_2d", "T_2d"}
    assert geo["S"] == gap.S and geo["U_2d"] == gap.U_2d
    assert metrics.structural_gap(y, y, labels).S == 0.0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: metrics.uniformity(np.zeros((3, 4))), "all-zero row"),
        (lambda: metrics.uniformity(np.ones((1, 4))), "at least 2 points"),
        (lambda: metrics.uniformity(np.ones(4)), r"shape \(N, D\)"),
        (lambda: metrics.tolerance(np.ones((3, 4)), np.arange(3)), "two or more points"),
        (lambda: metrics.tolerance(np.ones((3, 4)), np.zeros(4)), "labels must have shape"),
        (lambda: metrics.modality_gap(np.ones((3, 4)), np.ones((2, 4))), "same points"),
        (lambda: metrics.uniformity(np.array([[1.0, np.nan]])), "NaN"),
    ],
)
def test_bad_input_messages(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_uniformity_memory_is_bounded(tmp_path):
    """20 000 points: the N x N matrix would take 1.6 GB (float32); the blocked computation stays far below."""
    script = tmp_path / "peak.py"
    script.write_text(
        "import resource, torch\n"
        "from geomstruct.metrics import uniformity\n"
        "x = torch.randn(20000, 64, generator=torch.Generator().manual_seed(0))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "u = uniformity(x, block_size=1024)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) * 1024, u)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout.split()
    growth_bytes, u = float(out[0]), float(out[1])
    assert growth_bytes < 200e6
    assert 3.0 < u < 4.0


def test_geomstruct_imports_neither_bench_nor_models():
    root = Path(__file__).resolve().parents[2] / "geomstruct"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"bench", "models"}, f"{path} imports {name}"
