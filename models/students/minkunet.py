"""MinkUNet students: the Res16UNet / MinkUNet family of SLidR (Sautier et al., CVPR 2022) on sparse tensors.

Architecture, for depth D (SLidR's ``Res16UNetBase``, ``model/res16unet.py``, from Choy et al., CVPR 2019):

- stem: submanifold conv (kernel ``stem_kernel``, no bias) -> BN -> ReLU;
- D encoder levels: kernel-2 stride-2 convolution (width kept, no bias) -> BN -> ReLU -> ``layers[i]``
  residual BasicBlocks to ``planes[i]``;
- D decoder levels: kernel-2 stride-2 transposed convolution to ``planes[D + j]`` (no bias) -> BN -> ReLU,
  concatenation ``[upsampled, skip]`` with the encoder output of the same stride (the stem output for the last
  level) -> ``layers[D + j]`` BasicBlocks;
- head: 1x1 convolution with bias to ``out_dim``; rows L2-normalised (``f / max(||f||, eps)``) when
  ``normalize`` (SLidR's pre-training model; its downstream model is not normalised).

BasicBlock (He et al., CVPR 2016; SLidR's ``model/modules/resnet_block.py``): conv3 -> BN -> ReLU -> conv3 -> BN,
plus the input (through 1x1 conv + BN when the width changes), -> ReLU; no conv has a bias.

Presets:

- ``slidr``: SLidR's point backbone as in valeoai/SLidR @ 14729d0, ``MinkUNet = Res16UNet34C``
  (``model/__init__.py:3``): ``INIT_DIM`` 32 (``model/res16unet.py:23``), ``LAYERS`` 2-3-4-6-2-2-2-2
  (``:297``), ``PLANES`` 32-64-128-256-256-128-96-96 (``:301``); stem kernel ``config["kernel_size"]`` (``:48``),
  3 in every SLidR config (``config/slidr_minkunet.yaml:20``, ``config/ppkt_nuscenes.yaml:20``,
  ``config/semseg_nuscenes.yaml:23``, ``config/semseg_kitti.yaml:24``); head ``final``, 1x1 with bias
  (``model/res16unet.py:225-227``); decoder ``me.cat(out, skip)`` (``:259``, ``:266``, ``:273``, ``:280``);
  output ``out.F / ||out.F||`` when ``normalize_features`` (``:285-290``), true in pre-training
  (``config/slidr_minkunet.yaml:60``) and asserted false downstream (``downstream/model_builder.py:45-47``);
  1 input channel (``pretrain/model_builder.py:42``). 37 849 184 parameters at ``out_dim=64``.
  Batch-norm momenta (PyTorch's convention, ``running = (1 - m) running + m batch``): ``config["bn_momentum"]``
  (``model/res16unet.py:36``) goes to the stem norm ``bn0`` (``:55``), the strided convolutions' ``bn1``-``bn4``
  (``:66``, ``:85``, ``:104``, ``:123``), the transposed ones' ``bntr4``-``bntr7`` (``:142``, ``:165``,
  ``:188``, ``:211``) and the shortcut (``downsample``) norms (``model/resnet.py:133-138``); it is 0.05 in
  pre-training (``config/slidr_minkunet.yaml:22``) and 0.02 downstream (``config/semseg_nuscenes.yaml:24``,
  ``config/semseg_kitti.yaml:25``). ``ResNetBase._make_layer`` does not pass it to the blocks
  (``model/resnet.py:141-163``), whose norms keep ``BasicBlockBase``'s default 0.1
  (``model/modules/resnet_block.py:25``). Initialisation: MinkowskiEngine's default (``init="minkowski"``, see
  :mod:`models.students.sparse.layers`), batch norm weight 1, bias 0 (``ResNetBase.weight_initialization``,
  ``model/resnet.py:106-110``).
- ``small`` (the CPU default, a choice of this project): half the widths, one block per level, stem kernel 3,
  momentum 0.1 everywhere and He-normal initialisation (``init="he"``, this project's original choice, kept so
  that the committed CPU results reproduce).

Known differences from SLidR's network, all outside the weights: the L2 normalisation clamps the norm at
``eps`` (SLidR divides by the bare norm, giving inf/NaN on an all-zero row), and the convolutions are this
project's (``models/students/sparse``), not MinkowskiEngine's. For fine-tuning as in SLidR, set the downstream
momentum with :func:`use_downstream_bn_momentum` (or :meth:`MinkUNetConfig.downstream` before building).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

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
from .sparse.layers import INITS
from .sparse.scan_maps import MergedMaps, ScanMaps, with_batch_index
from .voxelize import devoxelize, grid_coordinates, reduce_features, unique_cells, voxelize


@dataclass(frozen=True)
class MinkUNetConfig:
    """Widths, depths, batch-norm momenta and initialisation of a MinkUNet.

    ``planes`` and ``layers`` have 2 * depth entries (encoder, decoder). ``bn_momentum``: the norms of the stem,
    the strided and transposed convolutions and the shortcuts (SLidR's ``config["bn_momentum"]``);
    ``block_bn_momentum``: the two norms inside each BasicBlock (SLidR: ``BasicBlockBase``'s default 0.1);
    ``downstream_bn_momentum``: ``bn_momentum`` for fine-tuning (:meth:`downstream`; ``None``: unchanged);
    ``init``: ``"he"`` or ``"minkowski"`` (:mod:`models.students.sparse.layers`).
    """

    planes: tuple[int, ...] = (16, 32, 64, 128, 128, 64, 48, 48)
    layers: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 1, 1)
    init_dim: int = 16
    stem_kernel: int = 3
    bn_momentum: float = 0.1
    block_bn_momentum: float = 0.1
    downstream_bn_momentum: float | None = None
    init: str = "he"

    def __post_init__(self) -> None:
        if len(self.planes) != len(self.layers) or len(self.planes) % 2 or not self.planes:
            raise ValueError("planes and layers need the same, even, non-zero length")
        if self.init not in INITS:
            raise ValueError(f"unknown initialisation {self.init!r}; available: {', '.join(INITS)}")

    @property
    def depth(self) -> int:
        """Number of stride-2 levels."""
        return len(self.planes) // 2

    def downstream(self) -> MinkUNetConfig:
        """This configuration with ``bn_momentum = downstream_bn_momentum`` (itself when that is ``None``)."""
        if self.downstream_bn_momentum is None:
            return self
        return replace(self, bn_momentum=self.downstream_bn_momentum)


SLIDR_PRETRAIN_BN_MOMENTUM = 0.05  # valeoai/SLidR config/slidr_minkunet.yaml:22 (and config/ppkt_nuscenes.yaml:22)
SLIDR_DOWNSTREAM_BN_MOMENTUM = 0.02  # config/semseg_nuscenes.yaml:24, config/semseg_kitti.yaml:25
SLIDR_BLOCK_BN_MOMENTUM = 0.1  # model/modules/resnet_block.py:25, not overridden by model/resnet.py:141-163

PRESETS: dict[str, MinkUNetConfig] = {
    "small": MinkUNetConfig(),
    "slidr": MinkUNetConfig(
        planes=(32, 64, 128, 256, 256, 128, 96, 96),
        layers=(2, 3, 4, 6, 2, 2, 2, 2),
        init_dim=32,
        stem_kernel=3,
        bn_momentum=SLIDR_PRETRAIN_BN_MOMENTUM,
        block_bn_momentum=SLIDR_BLOCK_BN_MOMENTUM,
        downstream_bn_momentum=SLIDR_DOWNSTREAM_BN_MOMENTUM,
        init="minkowski",
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
    """``relu(bn(conv3(relu(bn(conv3(x))))) + shortcut(x))``, shortcut = 1x1 conv + BN when widths differ.

    The two inner norms use ``bn_momentum``, the shortcut's norm ``shortcut_bn_momentum`` (SLidR's split).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        backend: str,
        bn_momentum: float,
        shortcut_bn_momentum: float,
        init: str = "he",
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(SubmanifoldConv3d(c_in, c_out, 3, backend=backend, init=init), c_out, bn_momentum)
        self.conv2 = SubmanifoldConv3d(c_out, c_out, 3, backend=backend, init=init)
        self.norm2 = SparseBatchNorm(c_out, momentum=bn_momentum)
        self.shortcut = (
            nn.Sequential(
                SubmanifoldConv3d(c_in, c_out, 1, init=init), SparseBatchNorm(c_out, momentum=shortcut_bn_momentum)
            )
            if c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.norm2(self.conv2(self.conv1(x)))
        return out.replace(out.feats.add_(self.shortcut(x).feats).relu_())  # in place on the BN output


def _blocks(c_in: int, c_out: int, count: int, backend: str, cfg: MinkUNetConfig) -> nn.Sequential:
    return nn.Sequential(
        *(
            BasicBlock(c_in if i == 0 else c_out, c_out, backend, cfg.block_bn_momentum, cfg.bn_momentum, cfg.init)
            for i in range(count)
        )
    )


class MinkUNet(nn.Module):
    """MinkUNet on a :class:`SparseTensor` of stride 1; returns ``out_dim`` features per site, L2-normalised when
    ``normalize``."""

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
        d, m, init = cfg.depth, cfg.bn_momentum, cfg.init
        self.stem = ConvBNReLU(
            SubmanifoldConv3d(in_channels, cfg.init_dim, cfg.stem_kernel, backend=backend, init=init), cfg.init_dim, m
        )
        width = cfg.init_dim
        skips = [cfg.init_dim]
        self.down = nn.ModuleList()
        self.encoder = nn.ModuleList()
        for i in range(d):
            self.down.append(ConvBNReLU(DownConv3d(width, width, backend, init), width, m))
            self.encoder.append(_blocks(width, cfg.planes[i], cfg.layers[i], backend, cfg))
            width = cfg.planes[i]
            skips.append(width)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for j in range(d):
            planes = cfg.planes[d + j]
            self.up.append(ConvBNReLU(UpConv3d(width, planes, backend, init), planes, m))
            skip = skips[d - 1 - j]
            self.decoder.append(_blocks(planes + skip, planes, cfg.layers[d + j], backend, cfg))
            width = planes
        self.head = SubmanifoldConv3d(width, out_dim, 1, bias=True, init=init)

    def batch_norms(self) -> Iterator[tuple[SparseBatchNorm, bool]]:
        """Every norm with ``True`` for those inside a block (``block_bn_momentum``), ``False`` for the stem,
        strided, transposed and shortcut norms (``bn_momentum``)."""
        for layer in (self.stem, *self.down, *self.up):
            yield layer.norm, False
        for stage in (*self.encoder, *self.decoder):
            for block in stage:
                yield block.conv1.norm, True
                yield block.norm2, True
                if isinstance(block.shortcut, nn.Sequential):
                    yield block.shortcut[1], False

    def set_bn_momentum(self, bn_momentum: float | None = None, block_bn_momentum: float | None = None) -> None:
        """Set the momenta of the built network (``None``: unchanged) and record them in ``self.config``."""
        for norm, in_block in self.batch_norms():
            value = block_bn_momentum if in_block else bn_momentum
            if value is not None:
                norm.momentum = value
        updates = {"bn_momentum": bn_momentum, "block_bn_momentum": block_bn_momentum}
        self.config = replace(self.config, **{k: v for k, v in updates.items() if v is not None})

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.trunk(x)
        return out.replace(self.project(out.feats))

    def trunk(self, x: SparseTensor) -> SparseTensor:
        """The U-Net up to its last decoder block: the ``width``-channel features every site's output reads."""
        out = self.stem(x)
        skips = [out]
        for down, blocks in zip(self.down, self.encoder, strict=True):
            out = blocks(down(out))
            skips.append(out)
        skips.pop()
        for up, blocks in zip(self.up, self.decoder, strict=True):
            out = blocks(cat(up(out), skips.pop()))
        return out

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """The head on trunk features, row by row: ``f W + b`` (the 1x1 convolution), L2-normalised when
        ``normalize``. Row-wise, so the rows of some sites can be projected alone (:meth:`PointStudent.forward`)."""
        out = self.head.pointwise(feats)
        return l2_normalize(out, self.eps) if self.normalize else out


INPUTS = ("intensity", "z", "range", "x", "y", "radius")
"""Per-point input channels a student can read: the scan's ``intensity`` column, the height ``z`` in the sensor
frame (metres), the horizontal ``range`` sqrt(x^2 + y^2) (metres), the coordinates ``x`` and ``y`` and the
distance ``radius`` sqrt(x^2 + y^2 + z^2) (metres); ScaLR's WaffleIron reads intensity, x, y, z, radius
(:data:`models.students.waffleiron.SCALR_INPUTS`)."""


def input_channels(points: torch.Tensor, inputs: tuple[str, ...]) -> torch.Tensor:
    """``(N, len(inputs))`` input features of ``points`` (N, 4) = x, y, z, intensity (:data:`INPUTS`)."""
    columns = {
        "intensity": lambda: points[:, 3:4],
        "z": lambda: points[:, 2:3],
        "range": lambda: torch.linalg.vector_norm(points[:, :2], dim=1, keepdim=True),
        "x": lambda: points[:, 0:1],
        "y": lambda: points[:, 1:2],
        "radius": lambda: torch.linalg.vector_norm(points[:, :3], dim=1, keepdim=True),
    }
    unknown = [name for name in inputs if name not in columns]
    if unknown or not inputs:
        raise ValueError(f"unknown student inputs {unknown or inputs!r}; valid: {', '.join(INPUTS)}")
    if inputs == ("intensity",):
        return points[:, 3:4]  # a view: the default costs no copy
    return torch.cat([columns[name]() for name in inputs], dim=1)


class ScanCache:
    """At most ``capacity`` scans' voxels and kernel maps (:class:`~models.students.sparse.scan_maps.ScanMaps`),
    keyed by the scan's point coordinates (content, not name: a moved or augmented scan is another entry), the
    least recently used dropped first. A copy of the student (``copy.deepcopy``, pickling) starts with an empty
    cache of the same capacity."""

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor, ScanMaps]] = OrderedDict()

    def __deepcopy__(self, memo: dict[int, Any]) -> ScanCache:
        return ScanCache(self.capacity)

    def __getstate__(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "entries": OrderedDict()}

    def lookup(self, key: tuple[Any, ...], build: Callable[[], tuple[torch.Tensor, torch.Tensor, ScanMaps]]):
        """The entry of ``key``, built by ``build()`` when absent."""
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            return entry
        entry = build()
        self.entries[key] = entry
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return entry


class PointStudent(nn.Module):
    """Points -> voxels -> MinkUNet -> back to points.

    ``forward(points, batch)``: ``points`` (N, 4) = x, y, z, intensity, ``batch`` (N,) scan index; returns
    (N, out_dim) features, L2-normalised per voxel. The network reads the channels ``inputs`` of every point
    (:func:`input_channels`), averaged per voxel.
    """

    def __init__(
        self,
        network: MinkUNet,
        voxel_size: float | tuple[float, float, float] | None = None,
        system: str = "cartesian",
        reduce: str = "mean",
        inputs: tuple[str, ...] = ("intensity",),
        scan_cache: int = 0,
    ) -> None:
        super().__init__()
        self.network, self.voxel_size, self.system, self.reduce = network, voxel_size, system, reduce
        self.inputs = tuple(inputs)
        input_channels(torch.zeros(1, 4), self.inputs)  # validates the names
        self.scan_cache = ScanCache(scan_cache)

    def _sites(self, points: torch.Tensor, batch: torch.Tensor) -> SparseTensor:
        """The input sparse tensor of a batch: voxels, their mean input channels and, with a scan cache
        (``scan_cache`` > 0, points ordered by scan), the scans' voxels and kernel maps kept per scan and merged
        (:mod:`models.students.sparse.scan_maps`: bit-for-bit the batch-wide ones)."""
        with torch.no_grad():
            feats = input_channels(points, self.inputs)
            if self.scan_cache.capacity == 0 or bool((batch[1:] < batch[:-1]).any()):
                vox = voxelize(points[:, :3], batch, feats, self.voxel_size, self.system, self.reduce)
                return SparseTensor(vox.coords, vox.feats), vox.inverse
            indices, counts = torch.unique_consecutive(batch, return_counts=True)
            coords, inverse, scans, start, n_vox = [], [], [], 0, 0
            for index, count in zip(indices.tolist(), counts.tolist(), strict=True):
                xyz = points[start : start + count, :3]
                start += count
                entry = self.scan_cache.lookup(_scan_key(xyz), lambda xyz=xyz: self._scan(xyz))
                scan_coords, scan_inverse, maps = entry
                coords.append(with_batch_index(scan_coords, index))
                inverse.append(scan_inverse + n_vox)
                scans.append(maps)
                n_vox += len(scan_coords)
            inverse = torch.cat(inverse)
            vox_feats = reduce_features(feats, inverse, n_vox, self.reduce)
            return SparseTensor(torch.cat(coords), vox_feats, cache=MergedMaps(scans, indices.tolist())), inverse

    def _scan(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, ScanMaps]:
        cells = grid_coordinates(xyz, self.voxel_size, self.system)
        coords, inverse = unique_cells(torch.cat([cells.new_zeros(len(cells), 1), cells], dim=1))
        return coords, inverse, ScanMaps(coords)

    def voxel_forward(self, points: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V, out_dim)`` outputs of the ``V`` occupied voxels and the ``(N,)`` voxel of every point:
        ``forward`` is ``devoxelize(*voxel_forward(...))``."""
        sites, inverse = self._sites(points, batch)
        return self.network(sites).feats, inverse

    def forward(
        self, points: torch.Tensor, batch: torch.Tensor, index: torch.Tensor | None = None, distinct: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(N, out_dim)`` features of every point, or ``(len(index), out_dim)`` of the points ``index`` only.

        With ``index`` the network's trunk still runs on every voxel (the convolutions need them all), but the
        head, its normalisation and the copy to points run only on the wanted rows: a distillation step that
        scores 2048 pairs of 2 scans of 50 k points then projects 2048 rows to 512 channels instead of about
        50 k voxels and 100 k points, forward and backward (equal values; ``--projection all`` of
        ``benchmarks/profile_step.py`` times the step before this change).

        ``distinct=True`` (with ``index``) returns ``(F, rows)``: the outputs ``F`` of the distinct voxels holding
        the wanted points, the head run once per voxel, and the row of ``F`` of every wanted point (``F[rows]`` is
        the default return), for a consumer that pools rows and need not copy them to points: a region loss reads
        every point holding a pair, about 17 k of a synthetic scan in about 7 k voxels (:func:`bench.train.
        batch_regions`)."""
        if index is None:
            return devoxelize(*self.voxel_forward(points, batch))
        sites, inverse = self._sites(points, batch)
        rows = inverse[index]
        if not distinct:
            return self.network.project(devoxelize(self.network.trunk(sites).feats, rows))
        voxels, rows = torch.unique(rows, return_inverse=True)
        return self.network.project(devoxelize(self.network.trunk(sites).feats, voxels)), rows


def _scan_key(xyz: torch.Tensor) -> tuple[Any, ...]:
    """A scan's cache key: a digest of its point coordinates, with their device, dtype and count."""
    data = xyz.detach().contiguous().cpu().numpy().tobytes()
    return (hashlib.blake2b(data, digest_size=16).digest(), str(xyz.device), str(xyz.dtype), len(xyz))


def point_outputs(
    model: nn.Module,
    points: torch.Tensor,
    batch: torch.Tensor,
    apply: Callable[[torch.Tensor], torch.Tensor] | None = None,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """``apply(model(points, batch))[index]`` (``apply``: a row-wise map such as a linear head or an argmax;
    ``None``: the identity; ``index``: the points wanted, ``None``: all), computed cheaply for a
    :class:`PointStudent`: every point of a voxel has the voxel's output, so ``apply`` runs once per voxel and only
    the wanted rows are gathered (on the 0.2 m student of the ``full`` suite, a linear head on 16 classes then
    gathers 16 values per point instead of 512, in the forward and the backward pass); without ``apply``, the
    student's own head runs on the wanted rows only. Any other module mapping points to per-point outputs is
    evaluated as written."""
    voxel_forward = getattr(model, "voxel_forward", None)
    if voxel_forward is not None and apply is None and index is not None:
        return model(points, batch, index)  # the head runs on the wanted rows only
    if voxel_forward is None:
        out = model(points, batch)
        out = out if index is None else out[index]
        return out if apply is None else apply(out)
    feats, inverse = voxel_forward(points, batch)
    rows = inverse if index is None else inverse[index]
    if apply is not None and index is not None and len(rows) < feats.shape[0]:
        return apply(devoxelize(feats, rows))  # fewer wanted points than voxels
    return devoxelize(feats if apply is None else apply(feats), rows)


def use_downstream_bn_momentum(model: nn.Module) -> nn.Module:
    """Give every :class:`MinkUNet` inside ``model`` its config's ``downstream_bn_momentum`` (SLidR's 0.02 for
    the ``slidr`` preset; networks whose config has ``None`` are left alone); returns ``model``.

    For fine-tuning a pre-trained student as SLidR's downstream stage does (the block norms keep their 0.1).
    """
    for module in model.modules():
        if isinstance(module, MinkUNet) and module.config.downstream_bn_momentum is not None:
            module.set_bn_momentum(module.config.downstream_bn_momentum)
    return model


def build_minkunet(
    out_dim: int = 512,
    preset: str = "small",
    backend: str = "torch",
    in_channels: int | None = None,
    voxel_size: float | tuple[float, float, float] | None = None,
    system: str = "cartesian",
    inputs: tuple[str, ...] = ("intensity",),
    **overrides: object,
) -> PointStudent:
    """The MinkUNet point-cloud student (registered as ``minkunet``, :mod:`models.students.factory`): preset
    ``small`` (CPU default) or ``slidr``.

    ``overrides`` replace fields of the preset's :class:`MinkUNetConfig` (e.g. ``planes=...``,
    ``layers=...``, ``init="he"``, ``bn_momentum=0.02``).
    ``inputs``: the per-point channels the network reads (:data:`INPUTS`); ``in_channels`` defaults to their
    number. Seed the global generator (``torch.manual_seed``) before building for reproducible weights.
    """
    in_channels = len(inputs) if in_channels is None else in_channels
    if in_channels != len(inputs):
        raise ValueError(f"in_channels {in_channels} does not match the {len(inputs)} inputs {inputs}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {sorted(PRESETS)}")
    config = replace(PRESETS[preset], **overrides)  # type: ignore[arg-type]
    return PointStudent(MinkUNet(in_channels, out_dim, config, backend), voxel_size, system, inputs=tuple(inputs))
