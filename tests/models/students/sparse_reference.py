"""Brute-force references for the sparse-convolution tests: random sparse grids and dense convolutions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_sites(batch: int, grid: int, occupancy: float, generator: torch.Generator, low: int = 0) -> torch.Tensor:
    """Distinct rows ``(b, x, y, z)`` with spatial coordinates in ``[low, low + grid)``, each kept w.p. occupancy."""
    axes = torch.arange(grid)
    cells = torch.cartesian_prod(torch.arange(batch), axes, axes, axes)
    keep = torch.rand(cells.shape[0], generator=generator) < occupancy
    coords = cells[keep]
    coords[:, 1:] += low
    return coords


def densify(coords: torch.Tensor, feats: torch.Tensor, batch: int, grid: int) -> torch.Tensor:
    """Dense (B, C, G, G, G) tensor with ``feats`` at ``coords`` and zeros elsewhere (differentiable)."""
    dense = feats.new_zeros(batch, grid, grid, grid, feats.shape[1])
    dense = dense.index_put((coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]), feats)
    return dense.permute(0, 4, 1, 2, 3)


def read_sites(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Rows (M, C) of a dense (B, C, G, G, G) tensor at ``coords``."""
    return dense.permute(0, 2, 3, 4, 1)[coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]]


def conv3d_weight(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(K, Cin, Cout) -> ``conv3d`` layout (Cout, Cin, k, k, k)."""
    k = kernel_size
    return weight.reshape(k, k, k, weight.shape[1], weight.shape[2]).permute(4, 3, 0, 1, 2)


def conv_transpose3d_weight(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(K, Cin, Cout) -> ``conv_transpose3d`` layout (Cin, Cout, k, k, k)."""
    k = kernel_size
    return weight.reshape(k, k, k, weight.shape[1], weight.shape[2]).permute(3, 4, 0, 1, 2)


def dense_submanifold(coords, feats, weight, kernel_size, batch, grid):
    """``conv3d`` (padding k // 2) on the dense grid, read at the input sites."""
    dense = densify(coords, feats, batch, grid)
    out = F.conv3d(dense, conv3d_weight(weight, kernel_size), padding=kernel_size // 2)
    return read_sites(out, coords)


def dense_down(coords, feats, weight, coarse_coords, batch, grid):
    """``conv3d`` (kernel 2, stride 2) on the dense grid, read at the coarse sites."""
    out = F.conv3d(densify(coords, feats, batch, grid), conv3d_weight(weight, 2), stride=2)
    return read_sites(out, coarse_coords)


def dense_up(coarse_coords, feats, weight, fine_coords, batch, grid):
    """``conv_transpose3d`` (kernel 2, stride 2) of the coarse grid, read at the fine sites."""
    dense = densify(coarse_coords, feats, batch, grid // 2)
    out = F.conv_transpose3d(dense, conv_transpose3d_weight(weight, 2), stride=2)
    return read_sites(out, fine_coords)
