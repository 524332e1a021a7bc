"""Sparse layers of the torch backend against dense ``conv3d`` / ``conv_transpose3d`` (float64, <= 1e-10)."""

from __future__ import annotations

import pytest
import torch

from models.students.sparse import (
    SparseTensor,
    TorchBackend,
    downsample_map,
    functional,
    kernel_offsets,
    neighbour_table,
)
from models.students.sparse.functional import PairConvFunction
from models.students.sparse.kernel_map import down_pairs, submanifold_pairs, up_pairs

from .sparse_reference import dense_down, dense_submanifold, dense_up, random_sites

TOL = 1e-10
BATCH, GRID = 2, 6


def _case(seed: int, c_in: int, occupancy: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    coords = random_sites(BATCH, GRID, occupancy, gen)
    feats = torch.randn(coords.shape[0], c_in, generator=gen, dtype=torch.float64)
    return gen, coords, feats


def _grads(out: torch.Tensor, probe: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad((out * probe).sum(), inputs)


def test_kernel_offsets_order():
    assert kernel_offsets(3)[:3].tolist() == [[-1, -1, -1], [-1, -1, 0], [-1, -1, 1]]
    assert kernel_offsets(3)[13].tolist() == [0, 0, 0]
    assert kernel_offsets(2).tolist()[:2] == [[0, 0, 0], [0, 0, 1]]
    assert kernel_offsets(5).shape == (125, 3)


def test_neighbour_table_brute_force():
    gen, coords, _ = _case(0, 1)
    coords[:, 1:] -= 3  # negative coordinates too
    offsets = kernel_offsets(3)
    table = neighbour_table(coords, offsets)
    index = {tuple(c): i for i, c in enumerate(coords.tolist())}
    for i, (b, x, y, z) in enumerate(coords.tolist()):
        for k, (dx, dy, dz) in enumerate(offsets.tolist()):
            assert table[i, k] == index.get((b, x + dx, y + dy, z + dz), len(coords))


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_submanifold_matches_dense_conv3d(kernel_size):
    gen, coords, feats = _case(kernel_size, 3)
    weight = torch.randn(kernel_size**3, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    feats.requires_grad_(True)
    x = SparseTensor(coords, feats)
    y = TorchBackend().submanifold_conv(x, weight, kernel_size).feats
    ref = dense_submanifold(coords, feats, weight, kernel_size, BATCH, GRID)
    torch.testing.assert_close(y, ref, rtol=0, atol=TOL)
    probe = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    for g, g_ref in zip(_grads(y, probe, feats, weight), _grads(ref, probe, feats, weight), strict=True):
        torch.testing.assert_close(g, g_ref, rtol=0, atol=TOL)


def test_down_and_up_match_dense():
    gen, coords, feats = _case(7, 3, occupancy=0.2)
    w_down = torch.randn(8, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w_up = torch.randn(8, 5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    feats.requires_grad_(True)
    backend = TorchBackend()
    coarse = backend.down_conv(SparseTensor(coords, feats), w_down)
    assert coarse.stride == 2
    expected_sites = torch.unique(torch.cat([coords[:, :1], coords[:, 1:] // 2], 1), dim=0)
    torch.testing.assert_close(coarse.coords, expected_sites)
    ref_coarse = dense_down(coords, feats, w_down, coarse.coords, BATCH, GRID)
    torch.testing.assert_close(coarse.feats, ref_coarse, rtol=0, atol=TOL)

    fine = backend.up_conv(coarse, w_up)
    assert fine.stride == 1 and torch.equal(fine.coords, coords)
    ref_fine = dense_up(coarse.coords, ref_coarse, w_up, coords, BATCH, GRID)
    torch.testing.assert_close(fine.feats, ref_fine, rtol=0, atol=TOL)

    probe = torch.randn(fine.feats.shape, generator=gen, dtype=torch.float64)
    grads = _grads(fine.feats, probe, feats, w_down, w_up)
    grads_ref = _grads(ref_fine, probe, feats, w_down, w_up)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=0, atol=TOL)


def test_translation_by_even_offset_changes_nothing():
    gen, coords, feats = _case(3, 2)
    w = torch.randn(27, 2, 3, generator=gen, dtype=torch.float64)
    w_down = torch.randn(8, 3, 3, generator=gen, dtype=torch.float64)
    backend = TorchBackend()

    def run(c):
        x = backend.submanifold_conv(SparseTensor(c, feats), w, 3)
        return backend.down_conv(x, w_down)

    a = run(coords)
    shifted = coords.clone()
    shifted[:, 1:] -= torch.tensor([10, -4, 6])
    b = run(shifted)
    assert torch.equal(a.feats, b.feats)
    torch.testing.assert_close(
        b.coords[:, 1:] - a.coords[:, 1:], torch.tensor([[-5, 2, -3]]).expand_as(a.coords[:, 1:])
    )


def test_gradcheck_custom_backwards():
    gen, coords, feats = _case(11, 2, occupancy=0.15)
    w = torch.randn(27, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    x = feats.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(PairConvFunction.apply, (x, w, submanifold_pairs(coords, 3)))
    dmap = downsample_map(coords)
    w2 = torch.randn(8, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(PairConvFunction.apply, (x, w2, down_pairs(dmap)))
    xc = torch.randn(dmap.children.shape[0], 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(PairConvFunction.apply, (xc, w2, up_pairs(dmap)))


def test_chunked_pairs_equal_one_chunk(monkeypatch):
    """Splitting the pairs into several gather chunks must not change the result beyond rounding."""
    gen, coords, feats = _case(12, 3)
    w = torch.randn(27, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    x = feats.clone().requires_grad_(True)
    pairs = submanifold_pairs(coords, 3)
    outs = []
    for rows in (1 << 20, 40):
        monkeypatch.setattr(functional, "CHUNK_ROWS", rows)
        y = PairConvFunction.apply(x, w, pairs)
        outs.append((y, *torch.autograd.grad(y.square().sum(), (x, w))))
    assert len(functional._chunks(pairs, 1 << 20)) == 1 and len(functional._chunks(pairs, 40)) > 5
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)


def test_hand_computed_two_sites():
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1]])
    feats = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    weight = torch.arange(27, dtype=torch.float64).view(27, 1, 1)
    y = TorchBackend().submanifold_conv(SparseTensor(coords, feats), weight, 3).feats
    # site 0 sees itself (offset 13) and site 1 at offset (0, 0, +1) = index 14; site 1 sees site 0 at index 12.
    assert y.squeeze(1).tolist() == [13 * 1 + 14 * 2, 12 * 1 + 13 * 2]


@pytest.mark.parametrize("n_sites", [0, 1])
def test_empty_and_single_site(n_sites):
    coords = torch.tensor([[0, 5, -3, 2]])[:n_sites]
    feats = torch.ones(n_sites, 2, dtype=torch.float64, requires_grad=True)
    backend = TorchBackend()
    w = torch.ones(27, 2, 3, dtype=torch.float64, requires_grad=True)
    w2 = torch.ones(8, 3, 4, dtype=torch.float64, requires_grad=True)
    w3 = torch.ones(8, 4, 1, dtype=torch.float64, requires_grad=True)
    x = backend.submanifold_conv(SparseTensor(coords, feats), w, 3)
    coarse = backend.down_conv(x, w2)
    fine = backend.up_conv(coarse, w3)
    assert coarse.num_sites == n_sites and fine.num_sites == n_sites
    # one site: only the centre tap and slot (x mod 2, y mod 2, z mod 2) = (1, 1, 0) -> 6 contribute.
    assert fine.feats.tolist() == [[2.0 * 3 * 4]] * n_sites
    fine.feats.sum().backward()
    assert feats.grad.shape == (n_sites, 2) and w.grad.shape == w.shape
