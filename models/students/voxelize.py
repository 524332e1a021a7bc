"""Voxelisation of lidar points and the inverse map that carries voxel outputs back to the points.

Cartesian: ``v = floor(p / s)`` per axis (default s = 0.1 m, SLidR / MinkowskiEngine practice).
Cylindrical (SLidR's ``cylinder`` option, after Cylinder3D, Zhu et al., CVPR 2021):
``(rho, phi, z) = (sqrt(x^2 + y^2), atan2(y, x) in degrees, z)``, then ``floor`` by ``(s_rho, s_phi, s_z)``;
SLidR's default is 0.1 m, 1 degree, 0.1 m. Voxels are unique per scan (batch index first) and ordered by
(batch, x, y, z); voxel features are the mean (or first) of their points' features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

CARTESIAN_VOXEL = (0.1, 0.1, 0.1)
CYLINDRICAL_VOXEL = (0.1, 1.0, 0.1)  # metres, degrees, metres (SLidR)


@dataclass(frozen=True)
class Voxels:
    """``coords`` (V, 4) int64 ``(batch, i, j, k)``, ``feats`` (V, C), ``inverse`` (N,) voxel of every point."""

    coords: torch.Tensor
    feats: torch.Tensor
    inverse: torch.Tensor


def grid_coordinates(
    xyz: torch.Tensor,
    voxel_size: float | tuple[float, float, float] | None = None,
    system: Literal["cartesian", "cylindrical"] = "cartesian",
) -> torch.Tensor:
    """Integer voxel coordinates (N, 3) of points ``xyz`` (N, 3) (see module docstring for the formulas)."""
    if system == "cartesian":
        values = xyz
        default = CARTESIAN_VOXEL
    elif system == "cylindrical":
        rho = torch.linalg.vector_norm(xyz[:, :2], dim=1)
        phi = torch.atan2(xyz[:, 1], xyz[:, 0]) * (180.0 / math.pi)
        values = torch.stack([rho, phi, xyz[:, 2]], dim=1)
        default = CYLINDRICAL_VOXEL
    else:
        raise ValueError(f"unknown coordinate system {system!r}")
    size = default if voxel_size is None else voxel_size
    if isinstance(size, (int, float)):
        size = (float(size),) * 3
    scale = torch.tensor(size, dtype=values.dtype, device=values.device)
    return torch.floor(values / scale).to(torch.int64)


def unique_cells(cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(cells, dim=0, sorted=True, return_inverse=True)`` of integer rows (N, 4), exactly, by a 1-D
    unique of one mixed-radix key per row: ``key = ((c0 s1 + c1) s2 + c2) s3 + c3`` on the rows shifted to start
    at 0 (``s_a`` = the span of column a), which orders like the rows (lexicographically). Much faster than
    the row-wise unique. Rows whose key would overflow int64 take the row-wise path."""
    if cells.shape[0] == 0:
        return torch.unique(cells, dim=0, sorted=True, return_inverse=True)
    low = cells.min(dim=0).values
    shifted = cells - low
    spans = shifted.max(dim=0).values + 1
    if math.prod(int(v) for v in spans) >= 2**62:
        return torch.unique(cells, dim=0, sorted=True, return_inverse=True)
    key = shifted[:, 0]
    for axis in range(1, cells.shape[1]):
        key = key * spans[axis] + shifted[:, axis]
    _, inverse = torch.unique(key, sorted=True, return_inverse=True)
    coords = torch.empty((int(inverse.max()) + 1, cells.shape[1]), dtype=cells.dtype, device=cells.device)
    coords[inverse] = cells  # every row of a voxel holds the same cell
    return coords, inverse


def voxelize(
    xyz: torch.Tensor,
    batch: torch.Tensor,
    features: torch.Tensor,
    voxel_size: float | tuple[float, float, float] | None = None,
    system: Literal["cartesian", "cylindrical"] = "cartesian",
    reduce: Literal["mean", "first"] = "mean",
) -> Voxels:
    """Voxels of points ``xyz`` (N, 3) of scans ``batch`` (N,) with point ``features`` (N, C).

    ``reduce="mean"`` averages the features of a voxel's points; ``"first"`` keeps the first point's
    (SLidR's ``sparse_quantize`` choice). ``voxels.feats[voxels.inverse]`` carries voxel rows back to points.
    """
    cells = torch.cat([batch.to(torch.int64)[:, None], grid_coordinates(xyz, voxel_size, system)], dim=1)
    coords, inverse = unique_cells(cells)
    return Voxels(coords, reduce_features(features, inverse, coords.shape[0], reduce), inverse)


def reduce_features(
    features: torch.Tensor, inverse: torch.Tensor, n_vox: int, reduce: Literal["mean", "first"] = "mean"
) -> torch.Tensor:
    """``(n_vox, C)`` voxel features from the points' ``features`` (N, C) and their voxels ``inverse`` (N,): the
    mean of a voxel's points, or its first point's (:func:`voxelize`)."""
    if reduce == "mean":
        sums = features.new_zeros(n_vox, features.shape[1]).index_add_(0, inverse, features)
        counts = torch.bincount(inverse, minlength=n_vox).to(features.dtype)
        return sums / counts.clamp(min=1)[:, None]
    if reduce == "first":
        n = inverse.shape[0]
        first = torch.full((n_vox,), n, dtype=torch.int64, device=inverse.device)
        first = first.scatter_reduce(0, inverse, torch.arange(n, device=inverse.device), reduce="amin")
        return features[first]
    raise ValueError(f"unknown reduction {reduce!r}")


def devoxelize(voxel_feats: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Point features (N, C) = ``voxel_feats[inverse]``: every point takes its voxel's output."""
    return voxel_feats.index_select(0, inverse)
