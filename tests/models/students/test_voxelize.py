"""Voxelisation: brute-force cells, mean / first reduction, round trip through the inverse map."""

from __future__ import annotations

import math

import torch

from models.students.voxelize import devoxelize, grid_coordinates, voxelize


def _points(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    xyz = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * torch.tensor([2.0, 2.0, 0.6])
    batch = torch.randint(0, 3, (n,), generator=gen)
    feats = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return xyz, batch, feats


def test_cells_and_mean_match_brute_force():
    xyz, batch, feats = _points(2000, 0)
    vox = voxelize(xyz, batch, feats, voxel_size=0.25)
    cells = {}
    for i, (b, p) in enumerate(zip(batch.tolist(), xyz.tolist(), strict=True)):
        key = (b, *(math.floor(v / 0.25) for v in p))
        cells.setdefault(key, []).append(i)
    assert sorted(cells) == [tuple(c) for c in vox.coords.tolist()]  # unique and in (b, x, y, z) order
    for v, key in enumerate(tuple(c) for c in vox.coords.tolist()):
        torch.testing.assert_close(vox.feats[v], feats[cells[key]].mean(0), rtol=0, atol=1e-12)
    # round trip: every point lands back in its own cell
    back = devoxelize(vox.coords, vox.inverse)
    assert torch.equal(back[:, 0], batch)
    assert torch.equal(back[:, 1:], torch.floor(xyz / 0.25).to(torch.int64))


def test_first_reduction_keeps_first_point():
    xyz = torch.tensor([[0.05, 0.0, 0.0], [0.5, 0.0, 0.0], [0.01, 0.02, 0.03]])
    feats = torch.tensor([[1.0], [2.0], [3.0]])
    vox = voxelize(xyz, torch.zeros(3, dtype=torch.long), feats, reduce="first")
    assert vox.coords.tolist() == [[0, 0, 0, 0], [0, 5, 0, 0]]
    assert vox.feats.squeeze(1).tolist() == [1.0, 2.0]
    assert vox.inverse.tolist() == [0, 1, 0]


def test_cylindrical_hand_computed():
    xyz = torch.tensor([[3.0, 4.0, -0.05], [0.0, -2.0, 1.0]], dtype=torch.float64)
    cells = grid_coordinates(xyz, system="cylindrical")
    # rho = 5 m -> 50 (0.1 m); phi = 53.13 deg -> 53; z = -0.05 -> -1.  rho = 2 -> 20; phi = -90 -> -90; z -> 10.
    assert cells.tolist() == [[50, 53, -1], [20, -90, 10]]
