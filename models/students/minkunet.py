"""MinkUNet students: the Res16UNet / MinkUNet family of SLidR (Sautier et al., CVPR 2022) on sparse tensors.

Architecture (MinkowskiEngine's ``examples/minkunet.py``, Choy et al., CVPR 2019), for depth D:

- stem: submanifold conv (kernel ``stem_kernel``) -> BN -> ReLU;
- D encoder levels: kernel-2 stride-2 convolution (width kept) -> BN -> ReLU -> ``layers[i]`` residual
  BasicBlocks to ``planes[i]``;
- D decoder levels: kernel-2 stride-2 transposed convolution to ``planes[D + j]`` -> BN -> ReLU,
  concatenation with the encoder output of the same stride (the stem output for the last level) ->
  ``layers[D + j]`` BasicBlocks;
- head: 1x1 convolution with bias to ``out_dim``; rows L2-normalised (``f / max(||f||, eps)``).

BasicBlock (He et al., CVPR 2016): conv3 -> BN -> ReLU -> conv3 -> BN, plus the input (through 1x1 conv + BN
when the width changes), -> ReLU.

Presets: ``slidr`` is SLidR's MinkUNet (MinkUNet34C: planes 32-64-128-256-256-128-96-96, layers
2-3-4-6-2-2-2-2, stem kernel 5); ``small`` (the CPU default, a choice) halves the widths and uses one block
per level.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from .l2norm import l2_normalize
from .sparse import (
    DownConv3d,
    SparseBatchNorm,
    SparseReLU,
    SparseTensor,
    SubmanifoldConv3d,
    UpConv3d,
    cat,
)
from .voxelize import devoxelize, voxelize


@dataclass(frozen=True)
class MinkUNetConfig:
    """Widths and depths of a MinkUNet; ``planes`` and ``layers`` have 2 * depth entries (encoder, decoder)."""

    planes: tuple[int, ...] = (16, 32, 64, 128, 128, 64, 48, 48)
    layers: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 1, 1)
    init_dim: int = 16
    stem_kernel: int = 3
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        if len(self.planes) != len(self.layers) or len(self.planes) % 2 or not self.planes:
            raise ValueError("planes and layers need the same, even, non-zero length")

    @property
    def depth(self) -> int:
        """Number of stride-2 levels."""
        return len(self.planes) // 2


PRESETS: dict[str, MinkUNetConfig] = {
    "small": MinkUNetConfig(),
    "slidr": MinkUNetConfig(
        planes=(32, 64, 128, 256, 256, 128, 96, 96),
        layers=(2, 3, 4, 6, 2, 2, 2, 2),
        init_dim=32,
        stem_kernel=5,
    ),
}


class ConvBNReLU(nn.Module):
    """A sparse convolution module followed by batch norm and ReLU."""

    def __init__(self, conv: nn.Module, channels: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv = conv
        self.norm = SparseBatchNorm(channels, momentum=bn_momentum)
        self.act = SparseReLU(inplace=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.act(self.norm(self.conv(x)))


class BasicBlock(nn.Module):
    """``relu(bn(conv3(relu(bn(conv3(x))))) + shortcut(x))``, shortcut = 1x1 conv + BN when widths differ."""

    def __init__(self, c_in: int, c_out: int, backend: str, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(SubmanifoldConv3d(c_in, c_out, 3, backend=backend), c_out, bn_momentum)
        self.conv2 = SubmanifoldConv3d(c_out, c_out, 3, backend=backend)
        self.norm2 = SparseBatchNorm(c_out, momentum=bn_momentum)
        self.shortcut = (
            nn.Sequential(SubmanifoldConv3d(c_in, c_out, 1), SparseBatchNorm(c_out, momentum=bn_momentum))
            if c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.norm2(self.conv2(self.conv1(x)))
        return out.replace(out.feats.add_(self.shortcut(x).feats).relu_())  # in place on the BN output


def _blocks(c_in: int, c_out: int, count: int, backend: str, bn_momentum: float) -> nn.Sequential:
    return nn.Sequential(*(BasicBlock(c_in if i == 0 else c_out, c_out, backend, bn_momentum) for i in range(count)))


class MinkUNet(nn.Module):
    """MinkUNet on a :class:`SparseTensor` of stride 1; returns L2-normalised ``out_dim`` features per site."""

    def __init__(
        self,
        in_channels: int,
        out_dim: int,
        config: MinkUNetConfig | None = None,
        backend: str = "torch",
        normalize: bool = True,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        cfg = config or PRESETS["small"]
        self.config, self.normalize, self.eps = cfg, normalize, eps
        d, m = cfg.depth, cfg.bn_momentum
        self.stem = ConvBNReLU(
            SubmanifoldConv3d(in_channels, cfg.init_dim, cfg.stem_kernel, backend=backend), cfg.init_dim, m
        )
        width = cfg.init_dim
        skips = [cfg.init_dim]
        self.down = nn.ModuleList()
        self.encoder = nn.ModuleList()
        for i in range(d):
            self.down.append(ConvBNReLU(DownConv3d(width, width, backend), width, m))
            self.encoder.append(_blocks(width, cfg.planes[i], cfg.layers[i], backend, m))
            width = cfg.planes[i]
            skips.append(width)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for j in range(d):
            planes = cfg.planes[d + j]
            self.up.append(ConvBNReLU(UpConv3d(width, planes, backend), planes, m))
            skip = skips[d - 1 - j]
            self.decoder.append(_blocks(planes + skip, planes, cfg.layers[d + j], backend, m))
            width = planes
        self.head = SubmanifoldConv3d(width, out_dim, 1, bias=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.stem(x)
        skips = [out]
        for down, blocks in zip(self.down, self.encoder, strict=True):
            out = blocks(down(out))
            skips.append(out)
        skips.pop()
        for up, blocks in zip(self.up, self.decoder, strict=True):
            out = blocks(cat(up(out), skips.pop()))
        out = self.head(out)
        if self.normalize:
            out = out.replace(l2_normalize(out.feats, self.eps))
        return out


class PointStudent(nn.Module):
    """Points -> voxels -> MinkUNet -> back to points.

    ``forward(points, batch)``: ``points`` (N, 3 + in_channels) = x, y, z and per-point features (e.g.
    intensity), ``batch`` (N,) scan index; returns (N, out_dim) features, L2-normalised per voxel.
    """

    def __init__(
        self,
        network: MinkUNet,
        voxel_size: float | tuple[float, float, float] | None = None,
        system: str = "cartesian",
        reduce: str = "mean",
    ) -> None:
        super().__init__()
        self.network, self.voxel_size, self.system, self.reduce = network, voxel_size, system, reduce

    def forward(self, points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            vox = voxelize(points[:, :3], batch, points[:, 3:], self.voxel_size, self.system, self.reduce)
        out = self.network(SparseTensor(vox.coords, vox.feats))
        return devoxelize(out.feats, vox.inverse)


def build_student(
    name: str = "minkunet",
    out_dim: int = 512,
    preset: str = "small",
    backend: str = "torch",
    in_channels: int = 1,
    voxel_size: float | tuple[float, float, float] | None = None,
    system: str = "cartesian",
    **overrides: object,
) -> PointStudent:
    """A point-cloud student by name (``minkunet``): preset ``small`` (CPU default) or ``slidr``.

    ``overrides`` replace fields of the preset's :class:`MinkUNetConfig` (e.g. ``planes=...``,
    ``layers=...``).
    Seed the global generator (``torch.manual_seed``) before building for reproducible weights.
    """
    if name != "minkunet":
        raise ValueError(f"unknown student {name!r}; available: 'minkunet'")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {sorted(PRESETS)}")
    config = replace(PRESETS[preset], **overrides)  # type: ignore[arg-type]
    return PointStudent(MinkUNet(in_channels, out_dim, config, backend), voxel_size, system)
