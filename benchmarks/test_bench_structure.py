"""Benchmarks of the structure metrics (``geomstruct.structure``) on the full class-balanced point set: 3D and
2D features of 16 classes x 5000 points, D = 512 each, as in every run's ``metrics.json``.

Nominal multiply-add counts (``macs``, see ``conftest.py``), so that each ratio is the metric's time in units of
float32 matrix products of the same multiply-add count:

- linear CKA: three D x D products over N rows (``Xc^T Xc``, ``Yc^T Xc``, ``Yc^T Yc``, in float64): ``3 N D^2``;
- effective rank: one (``X^T X``, float64): ``N D^2`` (the 512 x 512 eigendecomposition is negligible);
- mutual k-NN with the per-run budget of ``MKNN_QUERIES`` = 10 000 query points against all N points, in both
  spaces: ``2 m N D``; the exact value (m = N) is the same blocked kernel on 8 times more rows;
- ``structure()``, what a run adds to its geometry: ``3 N D^2 + 2 m N D``.
"""

from __future__ import annotations

import pytest
import torch

from geomstruct.structure import MKNN_QUERIES, effective_rank, linear_cka, mutual_knn, structure

DIM = 512
N_CLASSES, PER_CLASS = 16, 5000
N = N_CLASSES * PER_CLASS


@pytest.fixture(scope="module")
def spaces() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    labels = torch.arange(N_CLASSES).repeat_interleave(PER_CLASS)
    q2d = torch.randn(N_CLASSES, DIM, generator=gen)[labels] + 1.5 * torch.randn(N, DIM, generator=gen)
    k3d = q2d @ torch.randn(DIM, DIM, generator=gen) / DIM**0.5 + torch.randn(N, DIM, generator=gen)
    return k3d, q2d


def test_linear_cka_80k(benchmark, record_reference, spaces):
    k3d, q2d = spaces
    record_reference(3 * N * DIM * DIM)
    benchmark.pedantic(linear_cka, args=(k3d, q2d), rounds=3, iterations=1)


def test_effective_rank_80k(benchmark, record_reference, spaces):
    k3d, _ = spaces
    record_reference(N * DIM * DIM)
    benchmark.pedantic(effective_rank, args=(k3d,), rounds=3, iterations=1)


def test_mutual_knn_80k(benchmark, record_reference, spaces):
    k3d, q2d = spaces
    record_reference(2 * MKNN_QUERIES * N * DIM)
    benchmark.pedantic(mutual_knn, args=(k3d, q2d), kwargs={"queries": MKNN_QUERIES}, rounds=1, iterations=1)


def test_structure_80k(benchmark, record_reference, spaces):
    k3d, q2d = spaces
    record_reference(3 * N * DIM * DIM + 2 * MKNN_QUERIES * N * DIM)
    benchmark.pedantic(structure, args=(k3d, q2d), rounds=1, iterations=1)
