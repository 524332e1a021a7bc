"""The patched spconv backend against the torch backend (skipped when spconv is not installed)."""

from __future__ import annotations

import pytest
import torch

from .sparse_reference import random_sites

pytest.importorskip("spconv", reason="spconv not installed: pip install -e '.[spconv]' to test the spconv backend")

from models.students.minkunet import MinkUNet, MinkUNetConfig  # noqa: E402
from models.students.sparse import SparseTensor, TorchBackend, get_backend  # noqa: E402

TOL = 1e-10


def _sorted_rows(t: SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(((t.coords[:, 0] * 4096 + t.coords[:, 1]) * 4096 + t.coords[:, 2]) * 4096 + t.coords[:, 3])
    return t.coords[order], t.feats[order]


@pytest.mark.parametrize("threads", [1, 2])
def test_layers_agree_forward_and_backward(threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(5)
        coords = random_sites(2, 10, 0.25, gen, low=-4)
        feats = torch.randn(coords.shape[0], 3, generator=gen, dtype=torch.float64)
        w1 = torch.randn(27, 3, 4, generator=gen, dtype=torch.float64)
        w2 = torch.randn(8, 4, 5, generator=gen, dtype=torch.float64)
        w3 = torch.randn(8, 5, 2, generator=gen, dtype=torch.float64)
        probe = torch.randn(coords.shape[0], 2, generator=gen, dtype=torch.float64)
        results = {}
        for backend in (TorchBackend(), get_backend("spconv")):
            leaves = [t.clone().requires_grad_(True) for t in (feats, w1, w2, w3)]
            x = backend.submanifold_conv(SparseTensor(coords, leaves[0]), leaves[1], 3)
            coarse = backend.down_conv(x, leaves[2])
            fine = backend.up_conv(coarse, leaves[3])
            grads = torch.autograd.grad((fine.feats * probe).sum(), leaves)
            results[backend.name] = (x.feats, _sorted_rows(coarse), fine.feats, grads)
        (x_t, (cc_t, cf_t), f_t, g_t), (x_s, (cc_s, cf_s), f_s, g_s) = results["torch"], results["spconv"]
        torch.testing.assert_close(x_s, x_t, rtol=0, atol=TOL)
        assert torch.equal(cc_s, cc_t)
        torch.testing.assert_close(cf_s, cf_t, rtol=0, atol=TOL)
        torch.testing.assert_close(f_s, f_t, rtol=0, atol=TOL)
        for a, b in zip(g_s, g_t, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=TOL)
    finally:
        torch.set_num_threads(previous)


def test_minkunet_agrees_across_backends():
    gen = torch.Generator().manual_seed(9)
    coords = random_sites(2, 16, 0.08, gen)
    feats = torch.randn(coords.shape[0], 2, generator=gen, dtype=torch.float64)
    config = MinkUNetConfig(planes=(4, 6, 6, 4), layers=(1, 1, 1, 1), init_dim=4, stem_kernel=5)
    torch.manual_seed(0)
    net_t = MinkUNet(2, 3, config, backend="torch").double()
    net_s = MinkUNet(2, 3, config, backend="spconv").double()
    net_s.load_state_dict(net_t.state_dict())
    outs, grads = [], []
    for net in (net_t, net_s):
        y = net(SparseTensor(coords, feats)).feats
        y[:, 0].sum().backward()
        outs.append(y)
        grads.append([p.grad for p in net.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=TOL)
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n_sites", [0, 1])
def test_empty_and_single_voxel(n_sites):
    config = MinkUNetConfig(planes=(4, 8, 8, 4), layers=(1, 1, 1, 1), init_dim=4)
    torch.manual_seed(0)
    net_t = MinkUNet(1, 5, config, backend="torch").eval()
    net_s = MinkUNet(1, 5, config, backend="spconv").eval()
    net_s.load_state_dict(net_t.state_dict())
    coords = torch.tensor([[0, -3, 7, 1]])[:n_sites]
    outs = [net(SparseTensor(coords, torch.ones(n_sites, 1))) for net in (net_t, net_s)]
    assert outs[1].feats.shape == (n_sites, 5) and torch.equal(outs[1].coords, coords)
    torch.testing.assert_close(outs[1].feats, outs[0].feats, rtol=0, atol=1e-6)
