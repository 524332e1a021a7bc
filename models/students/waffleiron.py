"""WaffleIron students: the point backbone of Puy et al. (ICCV 2023), ScaLR's 3D network (Puy et al., CVPR 2024).

Read from valeoai/WaffleIron @ bcd387c (v0.3.1: ``waffleiron/embedding.py``, ``waffleiron/backbone.py``,
``waffleiron/segmenter.py``, ``waffleiron/helper_projection.py``, ``datasets/pc_dataset.py``) and valeoai/ScaLR @
53c474d (``configs/pretrain/WI_768_pretrain.yaml``, ``distill.py:119-126``). Pure PyTorch (no torch_scatter):
the 3D -> 2D projection is an ``index_add_`` (the reference's ``scatter_reduce`` path, its default for torch >= 2).

The network, on the ``V`` tokens (points after voxel downsampling) of a batch of scans, ``f`` = ``channels``:

- ``embed`` (``Embedding``): ``x <- BN(x)``; ``point = W1 x + b1``; for the ``K`` nearest neighbours ``j`` of
  every token ``i`` (``neighbors[:, 0]`` is the token itself and is skipped)
  ``neigh_i = max_j W4 relu(BN(W2 BN(x_j - x_i)))`` (max over ``j``, per channel; ``W2``, ``W4`` without bias);
  ``tokens = Wf [point, neigh] + bf``.
- ``waffleiron``: ``depth`` layers ``d``, each ``tokens <- SpatialMix_d(tokens)`` then ``ChannelMix_d(tokens)``:

  - ``SpatialMix``: ``y = norm(tokens)``; *flatten*: ``g[c] = sum_{i in c} y_i / (n_c + 1e-6)`` on the 2D grid
    ``grids_shape[d % P]`` of the plane orthogonal to axis ``dim_proj[d % P]`` (``n_c`` tokens in cell ``c``,
    ``P`` = number of planes); ``g <- DW3x3(relu(DW3x3(g)))`` (depthwise 3x3 convolutions with bias);
    *inflate*: ``tokens_i <- tokens_i + s * g[cell(i)]`` (``s``: the per-channel LayerScale ``scale``).
  - ``ChannelMix``: ``tokens <- tokens + s * (W_b relu(W_a norm(tokens) + a) + b)``.

  ``norm`` is a layer norm over channels (``which_norm="layernorm"``, ScaLR) or a batch norm over tokens
  (``"batchnorm"``, WaffleIron's default); each residual branch goes through stochastic depth (``drop_path``,
  one draw per scan as the reference draws one per batch entry).
- ``classif``: ``out = Wc tokens + bc`` to ``out_dim`` (ScaLR: the teacher's dimension, 1024 for DINOv2 ViT-L),
  L2-normalised per row when ``normalize`` (this project's distillation convention; ScaLR's model returns the raw
  projection and its loss normalises, ``utils/distiller.py``).

Cell of a point on the plane orthogonal to axis ``a`` with in-plane axes ``(u, v)`` (``lut_axis_plane``):
``q_u = trunc((p_u - fov_min_u) / ((fov_max_u - fov_min_u) / H))`` (same for ``v`` with ``W``), cell
``q_u * W + q_v`` (``datasets/pc_dataset.py: get_occupied_2d_cells``), computed in float64 as the reference does.

Parameters have the reference's names and shapes (``embed.*``, ``waffleiron.channel_mix.{d}.*``,
``waffleiron.spatial_mix.{d}.*``, ``classif.*``; the student adds ``network.``), so a ScaLR or WaffleIron
checkpoint loads with :func:`load_reference_state_dict`; with the same seed, the default initialisation draws the
same weights as the reference (same module types and shapes, built in the same order). The computation runs on
``(V, f)`` rows (1x1 convolutions as matrix products, 2D grids channels-last), the same arithmetic as the
reference's ``(B, f, N)`` layout. ``embed.conv2.0`` and ``.2`` are batch norms over ``(token, neighbour)`` rows:
``BatchNorm1d`` here (the reference's ``BatchNorm2d`` on ``(B, C, N, K)``: the same statistics, keys and shapes).

Known differences from the reference, all outside the weights:

- input: the reference keeps one random point per 0.1 m voxel (``Voxelize``), crops to the ``fov`` and maps the
  dropped points back by nearest neighbour at evaluation; here every point of a voxel takes its voxel's token,
  whose inputs and position are the means of its points (``voxel_size=None``: every point is a token), and points
  outside the ``fov`` are assigned to the border cells (the reference drops them) so that every point has a feature;
- batches: the reference zero-pads scans to a common length (the padded points enter the embedding's batch-norm
  statistics in training); here the tokens of all scans are concatenated and no padding exists;
- neighbours: exact k-NN on the token positions (scipy's ``cKDTree`` on the CPU as in the reference, exact
  float64 brute force on other devices, :func:`knn`), the token itself forced first (the reference assumes it
  is, true without duplicate positions); a scan with ``K`` tokens or fewer repeats the token itself (the
  reference refuses it).

Presets (:data:`PRESETS`): ``wi-48-768`` (ScaLR's pre-training backbone, ``WI_768_pretrain.yaml``: 768 channels,
48 layers, planes ``dim_proj`` 2-1-0 with grids 256x256, 256x32, 256x32 over the fov [-64, 64] x [-64, 64] x
[-8, 8] m, 16 neighbours, layer norm, no stochastic depth; ScaLR feeds it ``inputs`` intensity, x, y, z, radius),
``wi-48-384`` (WaffleIron's nuScenes model, ``configs/WaffleIron-48-384__nuscenes.yaml``: batch norm, grids
166x166, 166x16, 166x16 over [-50, 50]^2 x [-5, 5] m, drop path 0.2) and ``small`` (this project's CPU choice:
64 channels, 8 layers, 1 m cells over ScaLR's fov).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.state_dicts import StateMismatch, compare_state

from .l2norm import l2_normalize
from .minkunet import ScanCache, _scan_key, input_channels
from .voxelize import devoxelize, grid_coordinates, reduce_features, unique_cells

REFERENCE = "valeoai/WaffleIron@bcd387ce5483c3712f037d3540b545115ec8c1f1 (v0.3.1)"
"""The reference implementation read (and, for the presets, valeoai/ScaLR@53c474d6953f3cf61744c07c73330899faa98940)."""

NORMS = ("layernorm", "batchnorm")
LUT_AXIS_PLANE = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
"""The in-plane axes of the projection along each axis (``datasets/pc_dataset.py: lut_axis_plane``)."""


@dataclass(frozen=True)
class WaffleIronConfig:
    """Width, depth, projections, neighbourhood, norms and head normalisation of a WaffleIron.

    ``grids_shape[p]`` is the (H, W) grid of the plane orthogonal to axis ``dim_proj[p]`` (layer ``d`` uses plane
    ``d % len(dim_proj)``); ``fov`` = ((x, y, z) min, (x, y, z) max) in metres; ``num_neighbors``: the ``K`` of
    the embedding; ``which_norm``: ``layernorm`` or ``batchnorm`` in the layers; ``drop_path``: stochastic-depth
    probability of every residual branch; ``normalize``: L2-normalise the head's rows.
    """

    channels: int = 64
    depth: int = 8
    dim_proj: tuple[int, ...] = (2, 1, 0)
    grids_shape: tuple[tuple[int, ...], ...] = ((128, 128), (128, 16), (128, 16))
    fov: tuple[tuple[float, ...], ...] = ((-64.0, -64.0, -8.0), (64.0, 64.0, 8.0))
    num_neighbors: int = 16
    which_norm: str = "layernorm"
    drop_path: float = 0.0
    normalize: bool = True

    def __post_init__(self) -> None:
        as_tuple = {
            "dim_proj": tuple(int(a) for a in self.dim_proj),
            "grids_shape": tuple(tuple(int(s) for s in g) for g in self.grids_shape),
            "fov": tuple(tuple(float(v) for v in b) for b in self.fov),
        }
        for key, value in as_tuple.items():
            object.__setattr__(self, key, value)
        problems = []
        if self.channels < 1 or self.depth < 1 or self.num_neighbors < 1:
            problems.append("channels, depth and num_neighbors must be positive")
        if not self.dim_proj or any(a not in LUT_AXIS_PLANE for a in self.dim_proj):
            problems.append(f"dim_proj must list axes 0, 1 or 2; got {list(self.dim_proj)}")
        if len(self.grids_shape) != len(self.dim_proj) or any(len(g) != 2 or min(g) < 1 for g in self.grids_shape):
            problems.append("grids_shape needs one positive (H, W) per entry of dim_proj")
        if (
            len(self.fov) != 2
            or any(len(b) != 3 for b in self.fov)
            or any(lo >= hi for lo, hi in zip(*self.fov, strict=True))
        ):
            problems.append(f"fov must be ((x, y, z) min, (x, y, z) max) with min < max; got {self.fov}")
        if self.which_norm not in NORMS:
            problems.append(f"which_norm must be one of {', '.join(NORMS)}; got {self.which_norm!r}")
        if not 0.0 <= self.drop_path < 1.0:
            problems.append(f"drop_path must be in [0, 1); got {self.drop_path}")
        if problems:
            raise ValueError("; ".join(problems))


PRESETS: dict[str, WaffleIronConfig] = {
    "small": WaffleIronConfig(),
    "wi-48-768": WaffleIronConfig(  # valeoai/ScaLR configs/pretrain/WI_768_pretrain.yaml
        channels=768,
        depth=48,
        dim_proj=(2, 1, 0),
        grids_shape=((256, 256), (256, 32), (256, 32)),
        fov=((-64.0, -64.0, -8.0), (64.0, 64.0, 8.0)),
        num_neighbors=16,
        which_norm="layernorm",
        drop_path=0.0,
    ),
    "wi-48-384": WaffleIronConfig(  # valeoai/WaffleIron configs/WaffleIron-48-384__nuscenes.yaml
        channels=384,
        depth=48,
        dim_proj=(2, 1, 0),
        grids_shape=((166, 166), (166, 16), (166, 16)),
        fov=((-50.0, -50.0, -5.0), (50.0, 50.0, 5.0)),
        num_neighbors=16,
        which_norm="batchnorm",
        drop_path=0.2,
    ),
}

SCALR_INPUTS = ("intensity", "x", "y", "z", "radius")
"""ScaLR's per-point inputs (``input_features: [intensity, xyz, radius]``, ``size_input: 5``); ScaLR standardises
the intensity with per-dataset constants (``datasets/nuscenes_for_scalr.py``), a data-side choice."""


class Projection(NamedTuple):
    """One 3D -> 2D projection of a batch: the flat cell ``scan * H * W + cell`` of every token, its weight
    ``1 / (n_cell + 1e-6)`` (V, 1) and the grid ``(scans, H, W)``."""

    cells: torch.Tensor
    weight: torch.Tensor
    shape: tuple[int, int, int]


class Tokens(NamedTuple):
    """The geometry of a batch's tokens: ``neighbors`` (V, K + 1) rows (the token first), one
    :class:`Projection` per plane, the scan slot of every token (V,) and the number of scans."""

    neighbors: torch.Tensor
    projections: list[Projection]
    scan: torch.Tensor
    n_scans: int


def _drop_path(x: torch.Tensor, tokens: Tokens, prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth (``backbone.py: DropPath``): the branch of a scan kept with probability ``1 - prob`` and
    scaled by ``1 / (1 - prob)``, one draw per scan."""
    if not training or prob == 0.0:
        return x
    keep = 1.0 - prob
    mask = (keep + torch.rand(tokens.n_scans, dtype=x.dtype, device=x.device)).floor_()
    return x.div(keep) * mask[tokens.scan, None]


def _norm(which: str, channels: int) -> nn.Module:
    """The layer's norm: ``nn.LayerNorm`` over channels (the reference's ``myLayerNorm`` on ``(B, C, N)``) or
    ``nn.BatchNorm1d`` over tokens; both act on ``(V, C)`` rows."""
    return nn.LayerNorm(channels) if which == "layernorm" else nn.BatchNorm1d(channels)


def _pointwise(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """A 1x1 convolution (``Conv1d`` or ``Conv2d``) applied to ``(..., C_in)`` rows."""
    weight = conv.weight.reshape(conv.weight.shape[0], conv.weight.shape[1])
    return F.linear(x, weight, conv.bias)


class Embedding(nn.Module):
    """``waffleiron/embedding.py: Embedding`` on ``(V, C_in)`` rows (module docstring)."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(channels_in)
        self.conv1 = nn.Conv1d(channels_in, channels_out, 1)
        self.conv2 = nn.Sequential(
            nn.BatchNorm1d(channels_in),  # the reference's BatchNorm2d: same statistics on (token, neighbour) rows
            nn.Conv2d(channels_in, channels_out, 1, bias=False),
            nn.BatchNorm1d(channels_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels_out, channels_out, 1, bias=False),
        )
        self.final = nn.Conv1d(2 * channels_out, channels_out, 1, bias=True, padding=0)

    def forward(self, x: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        point = _pointwise(x, self.conv1)
        n_tok, k = neighbors.shape[0], neighbors.shape[1] - 1
        neigh = (x[neighbors[:, 1:]] - x[:, None, :]).reshape(n_tok * k, -1)  # relative inputs, (V K, C_in)
        neigh = self.conv2[0](neigh)
        neigh = self.conv2[2](_pointwise(neigh, self.conv2[1]))
        neigh = _pointwise(torch.relu(neigh), self.conv2[4])
        neigh = neigh.reshape(n_tok, k, -1).max(dim=1).values  # max(-1)[0] in the reference: one argmax's gradient
        return _pointwise(torch.cat((point, neigh), dim=1), self.final)


class ChannelMix(nn.Module):
    """``backbone.py: ChannelMix``: ``tokens + drop(s * MLP(norm(tokens)))``."""

    def __init__(self, channels: int, drop_path: float, which_norm: str) -> None:
        super().__init__()
        self.norm = _norm(which_norm, channels)
        self.mlp = nn.Sequential(
            nn.Conv1d(channels, channels, 1), nn.ReLU(inplace=True), nn.Conv1d(channels, channels, 1)
        )
        self.scale = nn.Conv1d(channels, channels, 1, bias=False, groups=channels)  # LayerScale
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, tokens: Tokens) -> torch.Tensor:
        y = _pointwise(torch.relu(_pointwise(self.norm(x), self.mlp[0])), self.mlp[2])
        return x + _drop_path(y * self.scale.weight[:, 0, 0], tokens, self.drop_path, self.training)


class SpatialMix(nn.Module):
    """``backbone.py: SpatialMix``: ``tokens + drop(s * inflate(FFN(flatten(norm(tokens)))))`` on one 2D grid.

    The LayerScale ``s`` multiplies the gathered rows rather than the grid (the reference scales the grid, then
    gathers): elementwise, so the same numbers."""

    def __init__(self, channels: int, grid_shape: tuple[int, ...], drop_path: float, which_norm: str) -> None:
        super().__init__()
        self.grid_shape = tuple(grid_shape)
        self.norm = _norm(which_norm, channels)
        self.ffn = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
        )
        self.scale = nn.Conv1d(channels, channels, 1, bias=False, groups=channels)  # LayerScale
        self.drop_path = drop_path

    def extra_repr(self) -> str:
        return f"(grid): {list(self.grid_shape)}"

    def forward(self, x: torch.Tensor, tokens: Tokens, projection: Projection) -> torch.Tensor:
        scans, height, width = projection.shape
        channels = x.shape[1]
        y = self.norm(x) * projection.weight
        grid = x.new_zeros(scans * height * width, channels).index_add_(0, projection.cells, y)  # flatten (mean)
        grid = self.ffn(grid.view(scans, height, width, channels).permute(0, 3, 1, 2))  # channels-last NCHW view
        grid = grid.permute(0, 2, 3, 1).reshape(scans * height * width, channels)
        y = grid.index_select(0, projection.cells) * self.scale.weight[:, 0, 0]  # inflate
        return x + _drop_path(y, tokens, self.drop_path, self.training)


class Backbone(nn.Module):
    """``backbone.py: WaffleIron``: ``depth`` x (SpatialMix on plane ``d % P``, ChannelMix)."""

    def __init__(self, cfg: WaffleIronConfig) -> None:
        super().__init__()
        planes = len(cfg.grids_shape)
        self.channel_mix = nn.ModuleList(
            [ChannelMix(cfg.channels, cfg.drop_path, cfg.which_norm) for _ in range(cfg.depth)]
        )
        self.spatial_mix = nn.ModuleList(
            [
                SpatialMix(cfg.channels, cfg.grids_shape[d % planes], cfg.drop_path, cfg.which_norm)
                for d in range(cfg.depth)
            ]
        )

    def forward(self, x: torch.Tensor, tokens: Tokens) -> torch.Tensor:
        planes = len(tokens.projections)
        for d, (smix, cmix) in enumerate(zip(self.spatial_mix, self.channel_mix, strict=True)):
            x = cmix(smix(x, tokens, tokens.projections[d % planes]), tokens)
        return x


class WaffleIron(nn.Module):
    """``segmenter.py: Segmenter`` (``embed``, ``waffleiron``, ``classif``) on token rows: ``(V, C_in)`` inputs
    and their :class:`Tokens` geometry -> ``(V, out_dim)``, L2-normalised when ``normalize``."""

    def __init__(self, in_channels: int, out_dim: int, config: WaffleIronConfig | None = None, eps: float = 1e-12):
        super().__init__()
        cfg = config or PRESETS["small"]
        self.config, self.normalize, self.eps = cfg, cfg.normalize, eps
        self.embed = Embedding(in_channels, cfg.channels)
        self.waffleiron = Backbone(cfg)
        self.classif = nn.Conv1d(cfg.channels, out_dim, 1)

    def trunk(self, feats: torch.Tensor, tokens: Tokens) -> torch.Tensor:
        """Embedding and layers: the ``channels``-wide features of every token."""
        return self.waffleiron(self.embed(feats, tokens.neighbors), tokens)

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """The head on trunk rows, L2-normalised when ``normalize`` (row-wise: any subset of rows alone)."""
        out = _pointwise(feats, self.classif)
        return l2_normalize(out, self.eps) if self.normalize else out

    def forward(self, feats: torch.Tensor, tokens: Tokens) -> torch.Tensor:
        return self.project(self.trunk(feats, tokens))


def cell_indices(xyz: torch.Tensor, cfg: WaffleIronConfig) -> torch.Tensor:
    """``(P, n)`` cell of every position on each plane (module docstring; ``get_occupied_2d_cells``), computed in
    float64, positions outside the ``fov`` clamped to the border cells."""
    low = torch.tensor(cfg.fov[0], dtype=torch.float64, device=xyz.device)
    high = torch.tensor(cfg.fov[1], dtype=torch.float64, device=xyz.device)
    p = xyz.to(torch.float64)
    cells = []
    for axis, grid in zip(cfg.dim_proj, cfg.grids_shape, strict=True):
        u, v = LUT_AXIS_PLANE[axis]
        qs = []
        for dim, size in ((u, grid[0]), (v, grid[1])):
            res = (high[dim] - low[dim]) / size
            qs.append(torch.trunc((p[:, dim] - low[dim]) / res).to(torch.int64).clamp_(0, size - 1))
        cells.append(qs[0] * grid[1] + qs[1])
    return torch.stack(cells) if cells else xyz.new_zeros((0, len(xyz)), dtype=torch.int64)


def knn(xyz: torch.Tensor, k: int, chunk: int = 1024, method: str | None = None) -> torch.Tensor:
    """``(n, k + 1)`` indices of every position's ``k`` nearest positions, the position itself first (columns
    1.. by increasing distance); fewer than ``k + 1`` positions: the last columns repeat the position itself.

    ``method``: ``"kdtree"`` (scipy's ``cKDTree`` in float64, the reference's own search; the default on the
    CPU) or ``"brute"`` (exact squared distances in float64 by chunks of ``chunk`` rows, on the tensor's device;
    the default elsewhere). They differ only in the order of exactly equidistant neighbours."""
    n = len(xyz)
    out = torch.arange(n, device=xyz.device)[:, None].repeat(1, k + 1)
    take = min(k + 1, n)
    if n == 0:
        return out
    method = method or ("kdtree" if xyz.device.type == "cpu" else "brute")
    if method == "kdtree":
        from scipy.spatial import cKDTree

        p = xyz.detach().to(torch.float64).cpu().numpy()
        _, found = cKDTree(p).query(p, k=take)
        found = torch.from_numpy(np.asarray(found, dtype=np.int64).reshape(n, take)).to(xyz.device)
        own = torch.arange(n, device=xyz.device)
        moved = torch.nonzero(found[:, 0] != own).squeeze(1)  # a duplicate position came first
        for i in moved.tolist():
            others = found[i][found[i] != i]
            found[i] = torch.cat([own[i : i + 1], others, own[i : i + 1].repeat(take)])[:take]
        out[:, :take] = found
        return out
    if method != "brute":
        raise ValueError(f"unknown k-NN method {method!r}; valid: kdtree, brute")
    p = xyz.to(torch.float64)
    for start in range(0, n, chunk):
        rows = p[start : start + chunk]
        d2 = ((rows[:, None, :] - p[None, :, :]) ** 2).sum(-1)
        d2[torch.arange(len(rows)), torch.arange(start, start + len(rows))] = -1.0  # the position itself first
        out[start : start + chunk, :take] = torch.topk(d2, take, dim=1, largest=False, sorted=True).indices
    return out


class ScanTokens(NamedTuple):
    """One scan's tokens: the token of every point (n,), the token positions (v, 3), neighbours (v, K + 1) and
    cells (P, v), all local to the scan."""

    inverse: torch.Tensor
    neighbors: torch.Tensor
    cells: torch.Tensor


class WaffleIronStudent(nn.Module):
    """Points -> tokens (voxel means) -> WaffleIron -> back to points, the interface of
    :class:`~models.students.minkunet.PointStudent`.

    ``forward(points, batch)``: ``points`` (N, 4) = x, y, z, intensity, ``batch`` (N,) scan index; returns
    (N, out_dim) features (every point its token's). The network reads the channels ``inputs`` of every point
    (:func:`~models.students.minkunet.input_channels`), averaged per token. ``scan_cache`` > 0 keeps that many
    scans' tokens, neighbours and cells (keyed by the scan's coordinates), as the MinkUNet student keeps its maps.
    """

    def __init__(
        self,
        network: WaffleIron,
        voxel_size: float | tuple[float, float, float] | None = 0.1,
        system: str = "cartesian",
        inputs: tuple[str, ...] = SCALR_INPUTS,
        scan_cache: int = 0,
    ) -> None:
        super().__init__()
        self.network, self.voxel_size, self.system = network, voxel_size, system
        self.inputs = tuple(inputs)
        input_channels(torch.zeros(1, 4), self.inputs)  # validates the names
        self.scan_cache = ScanCache(scan_cache)

    def _scan(self, xyz: torch.Tensor) -> ScanTokens:
        cfg = self.network.config
        if self.voxel_size is None:
            inverse = torch.arange(len(xyz), device=xyz.device)
            centres = xyz
        else:
            cells = grid_coordinates(xyz, self.voxel_size, self.system)
            coords, inverse = unique_cells(torch.cat([cells.new_zeros(len(cells), 1), cells], dim=1))
            centres = reduce_features(xyz, inverse, len(coords), "mean")
        return ScanTokens(inverse, knn(centres, cfg.num_neighbors), cell_indices(centres, cfg))

    def tokens(self, points: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, Tokens, torch.Tensor]:
        """The ``(V, C_in)`` token inputs of a batch, their :class:`Tokens` and the ``(N,)`` token of every point;
        tokens are grouped by scan in increasing scan index."""
        cfg = self.network.config
        with torch.no_grad():
            inverse = torch.empty(len(points), dtype=torch.int64, device=points.device)
            neighbors, cells, scan, offset = [], [], [], 0
            scan_ids = torch.unique(batch).tolist()
            for slot, index in enumerate(scan_ids):
                where = torch.nonzero(batch == index).squeeze(1)
                xyz = points[where, :3]
                if self.scan_cache.capacity:
                    entry = self.scan_cache.lookup(_scan_key(xyz), lambda xyz=xyz: self._scan(xyz))
                else:
                    entry = self._scan(xyz)
                inverse[where] = entry.inverse + offset
                neighbors.append(entry.neighbors + offset)
                n_tok = len(entry.neighbors)
                grid_sizes = torch.tensor([h * w for h, w in cfg.grids_shape], device=points.device)
                cells.append(entry.cells + slot * grid_sizes[:, None])
                scan.append(torch.full((n_tok,), slot, dtype=torch.int64, device=points.device))
                offset += n_tok
            n_scans = len(scan_ids)
            all_cells = torch.cat(cells, dim=1)
            projections = []
            for plane, (h, w) in enumerate(cfg.grids_shape):
                flat = all_cells[plane]
                counts = torch.bincount(flat, minlength=n_scans * h * w).to(points.dtype)
                weight = (1.0 / (counts[flat] + 1e-6))[:, None]  # occupied / (count + 1e-6), helper_projection.py
                projections.append(Projection(flat, weight, (n_scans, h, w)))
            geometry = Tokens(torch.cat(neighbors), projections, torch.cat(scan), n_scans)
            feats = reduce_features(input_channels(points, self.inputs), inverse, offset, "mean")
        return feats, geometry, inverse

    def voxel_forward(self, points: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V, out_dim)`` outputs of the tokens and the ``(N,)`` token of every point."""
        feats, geometry, inverse = self.tokens(points, batch)
        return self.network(feats, geometry), inverse

    def forward(
        self, points: torch.Tensor, batch: torch.Tensor, index: torch.Tensor | None = None, distinct: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(N, out_dim)`` features of every point, or of the points ``index`` only (the head then runs on their
        tokens only); ``distinct=True`` returns ``(F, rows)``: the outputs of the distinct tokens holding the
        wanted points and each wanted point's row of ``F`` (as :meth:`PointStudent.forward`)."""
        if index is None:
            return devoxelize(*self.voxel_forward(points, batch))
        feats, geometry, inverse = self.tokens(points, batch)
        trunk = self.network.trunk(feats, geometry)
        rows = inverse[index]
        if not distinct:
            return self.network.project(devoxelize(trunk, rows))
        wanted, rows = torch.unique(rows, return_inverse=True)
        return self.network.project(devoxelize(trunk, wanted)), rows


def build_waffleiron(
    out_dim: int = 512,
    preset: str = "small",
    in_channels: int | None = None,
    voxel_size: float | tuple[float, float, float] | None = 0.1,
    system: str = "cartesian",
    inputs: tuple[str, ...] = ("intensity",),
    **overrides: Any,
) -> WaffleIronStudent:
    """The WaffleIron point-cloud student (registered as ``waffleiron``, :mod:`models.students.factory`): preset
    ``small`` (CPU), ``wi-48-768`` (ScaLR) or ``wi-48-384`` (WaffleIron nuScenes); ``overrides`` replace fields of
    the preset's :class:`WaffleIronConfig`. ``inputs``: the per-point channels (ScaLR's are :data:`SCALR_INPUTS`);
    ``in_channels`` defaults to their number. Seed the global generator before building for reproducible weights.
    """
    in_channels = len(inputs) if in_channels is None else in_channels
    if in_channels != len(inputs):
        raise ValueError(f"in_channels {in_channels} does not match the {len(inputs)} inputs {inputs}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {sorted(PRESETS)}")
    config = replace(PRESETS[preset], **overrides)
    return WaffleIronStudent(WaffleIron(in_channels, out_dim, config), voxel_size, system, inputs=tuple(inputs))


def load_reference_state_dict(model: nn.Module, state: dict[str, Any], strict: bool = True) -> nn.Module:
    """Load a reference ``Segmenter`` state dict (valeoai/WaffleIron, ScaLR) into ``model`` (a
    :class:`WaffleIronStudent` or :class:`WaffleIron`); returns ``model``.

    ``state`` may be a checkpoint dict holding it under ``model_points`` / ``model_point`` (ScaLR's
    ``distill.py`` / ``finetune.py``) or ``net`` (WaffleIron's ``launch_train.py``); a ``module.`` prefix
    (DistributedDataParallel) is removed. The keys and shapes are the reference's own (module docstring).

    Raises:
        ValueError: listing every missing, unexpected and mis-shaped key (``strict``; with ``strict=False``
            missing and unexpected keys are allowed, mis-shaped ones never).
    """
    for key in ("model_points", "model_point", "net"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    state = {k.removeprefix("module."): v for k, v in state.items()}
    network = model.network if isinstance(model, WaffleIronStudent) else model
    own = network.state_dict()
    mismatch = compare_state(own, state)
    if mismatch.shapes or (strict and mismatch):  # without strict only the shapes must fit
        kept = mismatch if strict else StateMismatch(shapes=mismatch.shapes)
        raise ValueError(f"the WaffleIron state dict does not fit the model ({REFERENCE}): {kept.describe()}")
    network.load_state_dict({k: v for k, v in state.items() if k in own}, strict=strict)
    return model
