"""The ``slidr`` preset against SLidR's Res16UNet34C (valeoai/SLidR @ 14729d0), and the MinkowskiEngine init.

SLidR's sources: ``model/res16unet.py`` (network), ``model/resnet.py`` (``_make_layer``, ``weight_initialization``),
``model/modules/resnet_block.py`` (BasicBlock), ``config/*.yaml`` (``kernel_size``, ``bn_momentum``);
MinkowskiEngine's ``MinkowskiConvolutionBase.reset_parameters`` (``MinkowskiEngine/MinkowskiConvolution.py``).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from models.students import MinkUNetConfig, build_student, use_downstream_bn_momentum
from models.students.minkunet import PRESETS
from models.students.sparse import DownConv3d, SparseBatchNorm, SubmanifoldConv3d, UpConv3d

PLANES = (32, 64, 128, 256, 256, 128, 96, 96)  # Res16UNet34C.PLANES
LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)  # Res16UNet34.LAYERS
INIT_DIM = 32  # Res16UNetBase.INIT_DIM


@pytest.fixture(scope="module")
def slidr():
    torch.manual_seed(0)
    return build_student("minkunet", out_dim=64, preset="slidr")


def _slidr_parameter_count(out_dim: int, stem_kernel: int, in_channels: int = 1) -> int:
    """Parameters of SLidR's Res16UNet34C, following its own channel bookkeeping (``self.inplanes``)."""

    def conv(c_in: int, c_out: int, volume: int, bias: bool = False) -> int:
        return volume * c_in * c_out + (c_out if bias else 0)

    def make_layer(inplanes: int, planes: int, blocks: int) -> int:  # ResNetBase._make_layer, stride 1
        total = conv(inplanes, planes, 1) + 2 * planes if inplanes != planes else 0  # downsample + its norm
        for i in range(blocks):
            total += conv(inplanes if i == 0 else planes, planes, 27) + conv(planes, planes, 27) + 4 * planes
        return total

    total = conv(in_channels, INIT_DIM, stem_kernel**3) + 2 * INIT_DIM  # conv0p1s1, bn0
    inplanes = INIT_DIM
    for i in range(4):  # convNpMs2, bnN, blockN
        total += conv(inplanes, inplanes, 8) + 2 * inplanes + make_layer(inplanes, PLANES[i], LAYERS[i])
        inplanes = PLANES[i]
    for j, skip in enumerate((PLANES[2], PLANES[1], PLANES[0], INIT_DIM)):  # convtrN, bntrN, me.cat, blockN
        planes = PLANES[4 + j]
        total += conv(inplanes, planes, 8) + 2 * planes + make_layer(planes + skip, planes, LAYERS[4 + j])
        inplanes = planes
    return total + conv(PLANES[7], out_dim, 1, bias=True)  # final


def test_parameter_count(slidr):
    assert _slidr_parameter_count(64, stem_kernel=3) == 37_849_184
    assert _slidr_parameter_count(64, stem_kernel=5) == 37_852_320  # the former stem-5 preset
    assert sum(p.numel() for p in slidr.parameters()) == 37_849_184


def test_structure(slidr):
    net = slidr.network
    assert net.stem.conv.kernel_size == 3 and net.stem.conv.weight.shape == (27, 1, INIT_DIM)
    assert [len(stage) for stage in (*net.encoder, *net.decoder)] == list(LAYERS)
    assert [tuple(d.conv.weight.shape) for d in net.down] == [(8, 32, 32), (8, 32, 32), (8, 64, 64), (8, 128, 128)]
    assert [tuple(u.conv.weight.shape) for u in net.up] == [(8, 256, 256), (8, 256, 128), (8, 128, 96), (8, 96, 96)]
    # decoder input = [upsampled, skip]: planes[4 + j] + (planes[2], planes[1], planes[0], init_dim)
    assert [stage[0].conv1.conv.weight.shape[1] for stage in net.decoder] == [384, 192, 128, 128]
    assert [stage[-1].norm2.num_features for stage in (*net.encoder, *net.decoder)] == list(PLANES)
    shortcuts = [isinstance(stage[0].shortcut, nn.Sequential) for stage in (*net.encoder, *net.decoder)]
    assert shortcuts == [False, True, True, True, True, True, True, True]  # inplanes != planes
    assert net.head.weight.shape == (1, 96, 64) and net.head.bias is not None and net.head.bias.shape == (64,)
    convs = [m for m in net.modules() if isinstance(m, SubmanifoldConv3d | DownConv3d | UpConv3d)]
    assert all(getattr(m, "bias", None) is None for m in convs if m is not net.head)  # only `final` has a bias
    assert net.normalize  # SLidR's pre-training model normalises (normalize_features: True)


def test_bn_momenta_per_module(slidr):
    net = slidr.network
    assert PRESETS["slidr"].bn_momentum == 0.05 and PRESETS["slidr"].block_bn_momentum == 0.1
    outer = [net.stem.norm, *(d.norm for d in net.down), *(u.norm for u in net.up)]
    shortcut, inner = [], []
    for stage in (*net.encoder, *net.decoder):
        for block in stage:
            inner += [block.conv1.norm, block.norm2]
            if isinstance(block.shortcut, nn.Sequential):
                shortcut.append(block.shortcut[1])
    assert len(outer) == 9 and len(shortcut) == 7 and len(inner) == 2 * sum(LAYERS)
    norms = [m for m in net.modules() if isinstance(m, SparseBatchNorm)]
    assert {id(m) for m in norms} == {id(m) for m in outer + shortcut + inner}
    assert all(m.momentum == 0.05 for m in outer + shortcut)
    assert all(m.momentum == 0.1 for m in inner)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in norms)

    down = use_downstream_bn_momentum(copy.deepcopy(slidr))
    assert all(norm.momentum == (0.1 if in_block else 0.02) for norm, in_block in down.network.batch_norms())
    assert down.network.config == PRESETS["slidr"].downstream()
    assert PRESETS["slidr"].downstream().bn_momentum == 0.02
    assert all(m.momentum == 0.05 for m in outer)  # the original is untouched


def test_small_preset_momenta_and_downstream_unchanged():
    torch.manual_seed(0)
    student = build_student(out_dim=8, planes=(4, 8, 8, 4), layers=(1, 1, 1, 1), init_dim=4)
    assert student.network.config.init == "he"
    before = [norm.momentum for norm, _ in student.network.batch_norms()]
    assert set(before) == {0.1}
    use_downstream_bn_momentum(student)  # small has no downstream momentum
    assert [norm.momentum for norm, _ in student.network.batch_norms()] == before
    student.network.set_bn_momentum(0.02, 0.3)
    assert {(norm.momentum, in_block) for norm, in_block in student.network.batch_norms()} == {
        (0.02, False),
        (0.3, True),
    }
    assert student.network.config.bn_momentum == 0.02 and student.network.config.block_bn_momentum == 0.3


def _check_uniform(values: torch.Tensor, n: int) -> None:
    """``values`` look uniform in ``+-1 / sqrt(n)``: inside, reaching the edges, variance ``1 / (3 n)``."""
    bound = 1.0 / math.sqrt(n)
    values = values.detach().flatten().double()
    assert values.abs().max() <= bound
    assert values.max() > 0.99 * bound and values.min() < -0.99 * bound
    assert abs(values.mean()) < 0.05 * bound
    assert values.var().item() == pytest.approx(bound**2 / 3, rel=0.05)


@pytest.mark.parametrize(
    ("make", "n"),
    [
        (lambda: SubmanifoldConv3d(16, 24, 3, bias=True, init="minkowski"), 16 * 27),  # C_in * 3^3
        (lambda: SubmanifoldConv3d(40, 300, 1, bias=True, init="minkowski"), 40),  # 1x1 head / shortcut
        (lambda: DownConv3d(32, 48, init="minkowski"), 32 * 8),  # C_in * 2^3
        (lambda: UpConv3d(64, 16, init="minkowski"), 16 * 8),  # transposed: C_out * 2^3
    ],
)
def test_minkowski_init_bounds_and_variance(make, n):
    torch.manual_seed(0)
    layer = make()
    _check_uniform(layer.weight, n)
    if getattr(layer, "bias", None) is not None:
        assert layer.bias.abs().max() <= 1.0 / math.sqrt(n)


def test_transposed_fan_is_the_output_width():
    torch.manual_seed(0)
    up = UpConv3d(64, 16, init="minkowski")
    assert up.weight.abs().max() > 1.5 / math.sqrt(64 * 8)  # would be impossible with n = C_in * 8


def test_he_init_is_kept_for_small():
    torch.manual_seed(0)
    for layer, n in [(SubmanifoldConv3d(16, 64, 3), 16 * 27), (UpConv3d(64, 32), 64 * 8)]:  # fan-in, also for Up
        assert layer.weight.std().item() == pytest.approx(math.sqrt(2.0 / n), rel=0.05)
    with pytest.raises(ValueError):
        MinkUNetConfig(init="xavier")
    with pytest.raises(ValueError):
        DownConv3d(2, 2, init="xavier")


def test_slidr_weights_within_minkowski_bounds(slidr):
    for module in slidr.network.modules():
        if isinstance(module, SubmanifoldConv3d | DownConv3d | UpConv3d):
            volume, c_in, c_out = module.weight.shape
            n = volume * (c_out if isinstance(module, UpConv3d) else c_in)
            assert module.weight.abs().max() <= 1.0 / math.sqrt(n)


def test_slidr_forward_small_scan(slidr):
    gen = torch.Generator().manual_seed(5)
    points = torch.rand(500, 4, generator=gen) * torch.tensor([6.0, 6.0, 1.0, 1.0])
    model = copy.deepcopy(slidr).eval()
    with torch.no_grad():
        out = model(points, torch.zeros(500, dtype=torch.long))
    assert out.shape == (500, 64)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(500))
