"""MinkUNet student: shapes, normalisation, determinism, batching, degenerate inputs, factory."""

from __future__ import annotations

import pytest
import torch

from models.students import MinkUNet, MinkUNetConfig, build_student, point_outputs
from models.students.l2norm import l2_normalize
from models.students.minkunet import input_channels
from models.students.sparse import SparseTensor, TorchBackend

from .sparse_reference import random_sites

TINY = MinkUNetConfig(planes=(4, 8, 8, 4), layers=(1, 1, 1, 1), init_dim=4)


def _scan(seed: int, n: int = 3000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=gen) * torch.tensor([6.0, 6.0, 1.0])
    return torch.cat([xyz, torch.rand(n, 1, generator=gen)], dim=1)


def test_point_student_shapes_and_unit_norm():
    torch.manual_seed(0)
    student = build_student(out_dim=16, planes=TINY.planes, layers=TINY.layers, init_dim=4)
    points = torch.cat([_scan(1), _scan(2)])
    batch = torch.repeat_interleave(torch.arange(2), 3000)
    out = student(points, batch)
    assert out.shape == (6000, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(6000))
    out.sum().backward()
    assert all(p.grad is not None for p in student.parameters())


def test_point_outputs_apply_per_voxel_equal_the_per_point_computation():
    """A row-wise map run once per voxel then gathered equals the map of the per-point output, values and
    gradients, with and without a subset of points; a module without voxels is evaluated as written."""
    torch.manual_seed(0)
    student = build_student(out_dim=16, planes=TINY.planes, layers=TINY.layers, init_dim=4, voxel_size=0.3)
    student.network.normalize = False
    head = torch.nn.Linear(16, 5)
    points = torch.cat([_scan(1), _scan(2)])
    batch = torch.repeat_interleave(torch.arange(2), 3000)
    feats, inverse = student.voxel_forward(points, batch)
    assert feats.shape[0] < len(points) and inverse.shape == (6000,)  # several points share a voxel
    index = torch.tensor([5, 0, 5999, 3000, 17])
    for apply in (None, head, lambda x: x.argmax(dim=1)):
        for rows in (None, index):
            expected = student(points, batch)
            expected = expected if rows is None else expected[rows]
            expected = expected if apply is None else apply(expected)
            got = point_outputs(student, points, batch, apply, rows)
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
            plain = point_outputs(lambda p, b: student(p, b), points, batch, apply, rows)  # no voxel_forward
            torch.testing.assert_close(plain, expected, rtol=0, atol=0)
    student, head, points = (
        student.double(),
        head.double(),
        points.double(),
    )  # gradients: only the order of sums differs
    grads = []
    for compute in (lambda: head(student(points, batch)), lambda: point_outputs(student, points, batch, head)):
        student.zero_grad(), head.zero_grad()
        compute().square().sum().backward()
        grads.append([p.grad.clone() for p in (*student.parameters(), *head.parameters())])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("normalize", [True, False])
def test_projecting_only_the_wanted_points_equals_projecting_all(normalize):
    """``student(points, batch, index)`` runs the head on the wanted rows only: the same values and gradients as
    every point's output indexed afterwards (float64; a voxel's point may be asked for twice)."""
    torch.manual_seed(0)
    student = build_student(out_dim=16, planes=TINY.planes, layers=TINY.layers, init_dim=4, voxel_size=0.3).double()
    student.network.normalize = normalize
    points = torch.cat([_scan(1), _scan(2)]).double()
    batch = torch.repeat_interleave(torch.arange(2), 3000)
    index = torch.tensor([5, 0, 5999, 3000, 17, 5])
    _assert_same_outputs_and_gradients(
        student, len(index), lambda: student(points, batch)[index], lambda: student(points, batch, index)
    )
    assert student(points, batch, index[:0]).shape == (0, 16)
    with pytest.raises(ValueError, match="pointwise needs a 1x1x1 kernel"):
        student.network.stem.conv.pointwise(points)


def test_distinct_returns_each_wanted_voxel_once_and_the_row_of_every_point():
    """``distinct=True``: ``F[rows]`` is the default output, values and gradients (float64), with one row of ``F`` per
    distinct voxel of the wanted points; points of one voxel share a row."""
    torch.manual_seed(0)
    student = build_student(out_dim=16, planes=TINY.planes, layers=TINY.layers, init_dim=4, voxel_size=0.3).double()
    points = torch.cat([_scan(1), _scan(2)]).double()
    batch = torch.repeat_interleave(torch.arange(2), 3000)
    _, inverse = student.voxel_forward(points, batch)
    index = torch.arange(0, 6000, 7)

    def distinct_rows() -> torch.Tensor:
        feats, rows = student(points, batch, index, distinct=True)
        assert feats.shape == (len(torch.unique(inverse[index])), 16) and feats.shape[0] < len(index)
        assert torch.equal(rows == rows[0], inverse[index] == inverse[index[0]])  # same voxel, same row
        return feats[rows]

    _assert_same_outputs_and_gradients(student, len(index), lambda: student(points, batch, index), distinct_rows)


def _assert_same_outputs_and_gradients(student, n: int, *computations) -> None:
    """The computations give the same (n, 16) outputs and the same parameter gradients of a random linear loss."""
    target = torch.randn(n, 16, dtype=torch.float64)
    outputs, grads = [], []
    for compute in computations:
        student.zero_grad()
        out = compute()
        (out * target).sum().backward()
        outputs.append(out.detach())
        grads.append([p.grad.clone() for p in student.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_bit_for_bit_deterministic():
    points = torch.cat([_scan(3), _scan(4)])
    batch = torch.repeat_interleave(torch.arange(2), 3000)
    results = []
    for _ in range(2):
        torch.manual_seed(7)
        student = build_student(out_dim=8, planes=TINY.planes, layers=TINY.layers, init_dim=4)
        out = student(points, batch)
        out.square().sum().backward()
        results.append((out, [p.grad for p in student.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


def test_batch_of_scans_equals_scans_alone():
    """In eval mode a scan's output must not depend on the other scans of its batch (no cross-scan neighbours)."""
    torch.manual_seed(1)
    net = MinkUNet(1, 6, TINY).double().eval()
    gen = torch.Generator().manual_seed(2)
    coords = random_sites(3, 12, 0.1, gen)
    feats = torch.randn(coords.shape[0], 1, generator=gen, dtype=torch.float64)
    together = net(SparseTensor(coords, feats)).feats
    for b in range(3):
        rows = coords[:, 0] == b
        single = coords[rows].clone()
        single[:, 0] = 0
        alone = net(SparseTensor(single, feats[rows])).feats
        torch.testing.assert_close(together[rows], alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_sites", [0, 1])
def test_empty_and_single_voxel(n_sites):
    torch.manual_seed(0)
    net = MinkUNet(1, 5, TINY).eval()
    coords = torch.tensor([[0, -3, 7, 1]])[:n_sites]
    out = net(SparseTensor(coords, torch.ones(n_sites, 1)))
    assert out.feats.shape == (n_sites, 5) and torch.equal(out.coords, coords)
    torch.testing.assert_close(out.feats.norm(dim=1), torch.ones(n_sites))


def test_up_conv_needs_matching_down_conv():
    x = SparseTensor(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 2), stride=2)
    with pytest.raises(KeyError):
        TorchBackend().up_conv(x, torch.ones(8, 2, 2))


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError):
        build_student("pointnet")
    with pytest.raises(ValueError):
        build_student(preset="huge")
    with pytest.raises(ValueError, match="elevation"):
        build_student(inputs=("intensity", "elevation"))
    with pytest.raises(ValueError, match="does not match"):
        build_student(inputs=("intensity", "z"), in_channels=1)


def test_input_channels_are_the_named_columns():
    points = torch.tensor([[3.0, 4.0, -1.5, 0.25], [0.0, -2.0, 0.5, 0.75]])
    got = input_channels(points, ("z", "intensity", "range"))
    torch.testing.assert_close(got, torch.tensor([[-1.5, 0.25, 5.0], [0.5, 0.75, 2.0]]))
    torch.manual_seed(0)
    student = build_student(out_dim=8, planes=TINY.planes, layers=TINY.layers, init_dim=4, inputs=("intensity", "z"))
    assert student.network.stem.conv.weight.shape[-2] == 2  # the stem reads two channels (K, C_in, C_out)
    points = _scan(5)
    shifted = points.clone()
    shifted[:, 2] += 1.0  # the same cloud one metre higher: the occupancy is unchanged, the z channel is not
    batch = torch.zeros(len(points), dtype=torch.int64)
    student.eval()
    assert not torch.allclose(student(points, batch), student(shifted, batch))


def test_l2_normalize_matches_functional_and_gradcheck():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    x[2] = 0.0  # clamped row
    x[4] *= 1e-3
    x.requires_grad_(True)
    torch.testing.assert_close(l2_normalize(x), torch.nn.functional.normalize(x, dim=1), rtol=0, atol=1e-15)
    assert torch.autograd.gradcheck(lambda t: l2_normalize(t, 1e-6), (x,))
    probe = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    g = torch.autograd.grad((l2_normalize(x) * probe).sum(), x)[0]
    g_ref = torch.autograd.grad((torch.nn.functional.normalize(x, dim=1) * probe).sum(), x)[0]
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("spread", [1, 50, 10**6])
def test_unique_cells_equals_the_row_wise_unique(spread):
    from models.students.voxelize import unique_cells

    gen = torch.Generator().manual_seed(spread)
    cells = torch.randint(-spread, spread + 1, (5000, 4), generator=gen)
    cells[:, 0] = torch.randint(0, 3, (5000,), generator=gen)
    expected = torch.unique(cells, dim=0, sorted=True, return_inverse=True)
    got = unique_cells(cells)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    huge = cells.clone()
    huge[:, 1:] *= 2**40  # spans whose product overflows int64: the row-wise path
    expected = torch.unique(huge, dim=0, sorted=True, return_inverse=True)
    assert all(torch.equal(a, b) for a, b in zip(unique_cells(huge), expected, strict=True))
