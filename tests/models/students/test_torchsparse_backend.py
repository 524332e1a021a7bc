"""The torchsparse backend against the torch backend (skipped when torchsparse is not installed).

torchsparse's CPU kernels take float32 only: the layer tests use small integer values, whose float32 sums are exact,
so both backends must agree bit for bit; the MinkUNet test (batch norm, random values) compares float32 runs.
"""

from __future__ import annotations

import pytest
import torch

from .sparse_reference import random_sites

pytest.importorskip(
    "torchsparse",
    reason="torchsparse not installed: it is not on PyPI, build it from source "
    "(docs/implementation.md#torchsparse-backend-optional-build-from-source)",
)

import torchsparse.nn.functional as ts_functional  # noqa: E402
from torchsparse.nn.utils import get_kernel_offsets  # noqa: E402

from models.students.minkunet import MinkUNet, MinkUNetConfig  # noqa: E402
from models.students.sparse import SparseTensor, TorchBackend, get_backend, kernel_offsets  # noqa: E402
from models.students.sparse.torchsparse_backend import weight_from_torchsparse  # noqa: E402


def _sorted_rows(t: SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(((t.coords[:, 0] * 4096 + t.coords[:, 1]) * 4096 + t.coords[:, 2]) * 4096 + t.coords[:, 3])
    return t.coords[order], t.feats[order]


def _ints(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randint(-3, 4, shape, generator=gen).float()


@pytest.mark.parametrize(("threads", "kernel_size"), [(1, 3), (2, 3), (1, 5)])
def test_layers_agree_exactly_forward_and_backward(threads, kernel_size):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(5)
        coords = random_sites(2, 10, 0.25, gen, low=-4)
        feats = _ints(gen, coords.shape[0], 3)
        w1, w2, w3 = _ints(gen, kernel_size**3, 3, 4), _ints(gen, 8, 4, 5), _ints(gen, 8, 5, 2)
        probe = _ints(gen, coords.shape[0], 2)
        results = {}
        for backend in (TorchBackend(), get_backend("torchsparse")):
            leaves = [t.clone().requires_grad_(True) for t in (feats, w1, w2, w3)]
            x = backend.submanifold_conv(SparseTensor(coords, leaves[0]), leaves[1], kernel_size)
            coarse = backend.down_conv(x, leaves[2])
            fine = backend.up_conv(coarse, leaves[3])
            grads = torch.autograd.grad((fine.feats * probe).sum(), leaves)
            assert torch.get_num_threads() == threads  # restored after torchsparse's single-thread CPU kernels
            results[backend.name] = (x.feats, *_sorted_rows(coarse), fine.coords, fine.feats, *grads)
        for name, a, b in zip(
            ("subm", "coarse coords", "down", "fine coords", "up", "d feats", "d W subm", "d W down", "d W up"),
            results["torchsparse"],
            results["torch"],
            strict=True,
        ):
            assert torch.equal(a, b), name
        assert results["torch"][4].abs().max() > 100  # the values are not trivially small
    finally:
        torch.set_num_threads(previous)


def test_minkunet_agrees_across_backends():
    gen = torch.Generator().manual_seed(9)
    coords = random_sites(2, 16, 0.08, gen)
    feats = torch.randn(coords.shape[0], 2, generator=gen)
    config = MinkUNetConfig(planes=(4, 6, 6, 4), layers=(1, 1, 1, 1), init_dim=4, stem_kernel=5)
    torch.manual_seed(0)
    net_t = MinkUNet(2, 3, config, backend="torch")
    net_s = MinkUNet(2, 3, config, backend="torchsparse")
    net_s.load_state_dict(net_t.state_dict())
    outs, grads = [], []
    for net in (net_t, net_s):
        y = net(SparseTensor(coords, feats)).feats
        y[:, 0].sum().backward()
        outs.append(y)
        grads.append([p.grad for p in net.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-6)
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n_sites", [0, 1])
def test_empty_and_single_voxel(n_sites):
    config = MinkUNetConfig(planes=(4, 8, 8, 4), layers=(1, 1, 1, 1), init_dim=4)
    torch.manual_seed(0)
    net_t = MinkUNet(1, 5, config, backend="torch").eval()
    net_s = MinkUNet(1, 5, config, backend="torchsparse").eval()
    net_s.load_state_dict(net_t.state_dict())
    coords = torch.tensor([[0, -3, 7, 1]])[:n_sites]
    outs = [net(SparseTensor(coords, torch.ones(n_sites, 1))) for net in (net_t, net_s)]
    assert outs[1].feats.shape == (n_sites, 5) and torch.equal(outs[1].coords, coords)
    torch.testing.assert_close(outs[1].feats, outs[0].feats, rtol=0, atol=1e-6)


def test_cpu_hash_layout_is_batch_last():
    """torchsparse's CPU ``kernel_hash`` offsets columns 0-2 of its rows: the adapter's (x, y, z, batch) rows."""
    gen = torch.Generator().manual_seed(1)
    rows = torch.randint(-20, 20, (50, 4), generator=gen, dtype=torch.int32)
    offsets = kernel_offsets(3).to(torch.int32)
    shifted = rows[None].repeat(27, 1, 1)
    shifted[:, :, :3] += offsets[:, None]
    expected = ts_functional.sphash(shifted.reshape(-1, 4)).view(27, 50)
    assert torch.equal(ts_functional.sphash(rows, offsets), expected)


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
def test_weight_from_torchsparse_matches_its_offset_order(kernel_size):
    ts_offsets = get_kernel_offsets(kernel_size).to(torch.int64)  # torchsparse Conv3d's kernel order
    k = kernel_size**3
    index = torch.arange(k, dtype=torch.float64).view(k, 1, 1) if k > 1 else torch.zeros(1, 1)
    order = weight_from_torchsparse(index, kernel_size).reshape(-1).long()
    assert torch.equal(ts_offsets[order], kernel_offsets(kernel_size))
    if k > 1:
        assert torch.equal(weight_from_torchsparse(weight_from_torchsparse(index, kernel_size), kernel_size), index)


def test_float64_on_cpu_raises():
    x = SparseTensor(torch.tensor([[0, 0, 0, 0]]), torch.ones(1, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32"):
        get_backend("torchsparse").submanifold_conv(x, torch.ones(27, 2, 3, dtype=torch.float64), 3)
