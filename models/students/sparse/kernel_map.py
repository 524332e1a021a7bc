"""Kernel maps of sparse convolutions: which input site feeds which output site through which kernel offset.

Coordinates are integer rows ``(batch, x, y, z)``. A kernel map is built once per resolution and reused by every
layer at that resolution (MinkowskiEngine's coordinate manager, Choy et al., CVPR 2019, does the same).

Lookup: every coordinate is packed into one int64 key, ``key = ((b * Sx + x') * Sy + y') * Sz + z'`` with
``x' = x - min(x) + pad`` (and likewise for y, z), ``S = extent + 2 * pad``; the padding keeps every neighbour
query inside its own batch block, so a kernel offset ``(dx, dy, dz)`` is the constant key shift
``(dx * Sy + dy) * Sz + dz``. Queries are answered by ``searchsorted`` in the sorted keys.

Convolutions consume :class:`PairMap` s: (input row, output row) pairs grouped by kernel offset. The neighbour
table marks an absent neighbour with row ``M`` (one past the last input row).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch


def kernel_offsets(kernel_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Kernel offsets ``(K, 3)`` over (x, y, z), ``K = kernel_size ** 3``.

    Odd kernels: ``itertools.product(range(-r, r + 1), repeat=3)`` with ``r = kernel_size // 2``, so that offset
    ``k`` pairs with weight ``W[k]`` exactly as ``torch.nn.functional.conv3d`` (cross-correlation, padding ``r``)
    pairs input ``p + offset`` with output ``p``. Even kernels:
    ``itertools.product(range(kernel_size), repeat=3)``.
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    if kernel_size % 2 == 1:
        r = kernel_size // 2
        values = range(-r, r + 1)
    else:
        values = range(kernel_size)
    return torch.tensor(list(itertools.product(values, repeat=3)), dtype=torch.int64, device=device).reshape(-1, 3)


@dataclass(frozen=True)
class KeyPacker:
    """Packs ``(batch, x, y, z)`` rows into int64 keys with ``pad`` empty cells around every spatial extent."""

    low: tuple[int, int, int]
    size: tuple[int, int, int]
    pad: int

    @staticmethod
    def fit(coords: torch.Tensor, pad: int) -> KeyPacker:
        """The packer of ``coords`` (M, 4); empty inputs get a unit extent."""
        if coords.shape[0] == 0:
            return KeyPacker((0, 0, 0), (1 + 2 * pad,) * 3, pad)
        low = coords[:, 1:].amin(0)
        high = coords[:, 1:].amax(0)
        lo = tuple(int(v) for v in low.tolist())
        size = tuple(int(h) - int(lo_) + 1 + 2 * pad for h, lo_ in zip(high.tolist(), lo, strict=True))
        n_batch = int(coords[:, 0].max()) + 1
        if n_batch * size[0] * size[1] * size[2] >= 2**62:
            raise OverflowError("coordinate extent too large for int64 keys")
        return KeyPacker(lo, size, pad)  # type: ignore[arg-type]

    def pack(self, coords: torch.Tensor) -> torch.Tensor:
        """Keys (M,) of ``coords`` (M, 4)."""
        sx, sy, sz = self.size
        c = coords.to(torch.int64)
        x = c[:, 1] - (self.low[0] - self.pad)
        y = c[:, 2] - (self.low[1] - self.pad)
        z = c[:, 3] - (self.low[2] - self.pad)
        return ((c[:, 0] * sx + x) * sy + y) * sz + z

    def shift(self, offsets: torch.Tensor) -> torch.Tensor:
        """Key shifts (K,) of spatial ``offsets`` (K, 3); valid for ``|offset| <= pad``."""
        _, sy, sz = self.size
        return (offsets[:, 0] * sy + offsets[:, 1]) * sz + offsets[:, 2]


def neighbour_table(coords: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Submanifold neighbour table ``T`` (M, K): ``T[i, k] = j`` iff
    ``coords[j] = coords[i] + offsets[k]``, else ``M``.

    Cost: one sort of M keys and ``M * K`` binary searches.
    """
    m = coords.shape[0]
    k = offsets.shape[0]
    if m == 0:
        return torch.empty(0, k, dtype=torch.int64, device=coords.device)
    pad = int(offsets.abs().max()) if k else 0
    packer = KeyPacker.fit(coords, pad)
    keys = packer.pack(coords)
    sorted_keys, order = torch.sort(keys)
    queries = keys[:, None] + packer.shift(offsets.to(coords.device))[None, :]
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=m - 1)
    found = sorted_keys[pos] == queries
    return torch.where(found, order[pos], torch.full_like(pos, m))


@dataclass(frozen=True)
class DownsampleMap:
    """Map between a fine level and the coarse level of a kernel-2 stride-2 convolution.

    ``coarse_coords`` (Mc, 4) are ``floor(fine / 2)`` per spatial axis, unique, sorted by key;
    ``parent`` (Mf,) is the coarse row of every fine row; ``slot`` (Mf,) its kernel offset index
    ``4 * (x mod 2) + 2 * (y mod 2) + (z mod 2)`` (``product(range(2), repeat=3)`` order);
    ``children`` (Mc, 8) the fine row at each slot, or ``Mf`` (sentinel) where absent.
    """

    coarse_coords: torch.Tensor
    parent: torch.Tensor
    slot: torch.Tensor
    children: torch.Tensor


def downsample_map(coords: torch.Tensor) -> DownsampleMap:
    """The :class:`DownsampleMap` of fine ``coords`` (M, 4) for kernel 2, stride 2."""
    m = coords.shape[0]
    device = coords.device
    c = coords.to(torch.int64)
    half = torch.div(c[:, 1:], 2, rounding_mode="floor")
    rem = c[:, 1:] - 2 * half
    slot = rem[:, 0] * 4 + rem[:, 1] * 2 + rem[:, 2]
    coarse_all = torch.cat([c[:, :1], half], dim=1)
    if m == 0:
        empty = torch.empty(0, dtype=torch.int64, device=device)
        return DownsampleMap(coarse_all, empty, empty, torch.empty(0, 8, dtype=torch.int64, device=device))
    packer = KeyPacker.fit(coarse_all, 0)
    keys, parent = torch.unique(packer.pack(coarse_all), sorted=True, return_inverse=True)
    mc = keys.shape[0]
    coarse = torch.empty(mc, 4, dtype=torch.int64, device=device)
    coarse[parent] = coarse_all
    children = torch.full((mc * 8,), m, dtype=torch.int64, device=device)
    children[parent * 8 + slot] = torch.arange(m, device=device)
    return DownsampleMap(coarse, parent, slot, children.view(mc, 8))


@dataclass(frozen=True)
class PairMap:
    """``src``/``dst`` (P,) int64 rows grouped by kernel offset; ``bounds`` (K + 1) segment starts (Python ints);
    ``n_out`` output rows; ``identity`` the offset whose pairs are all ``(i, i)`` and are not listed, or -1.
    """

    src: torch.Tensor
    dst: torch.Tensor
    bounds: tuple[int, ...]
    n_out: int
    identity: int = -1


def _grouped(src: torch.Tensor, dst: torch.Tensor, offset: torch.Tensor, k: int, n_out: int, identity: int = -1):
    order = torch.argsort(offset, stable=True)
    counts = torch.bincount(offset, minlength=k)
    bounds = (0, *torch.cumsum(counts, 0).tolist())
    return PairMap(src[order], dst[order], bounds, n_out, identity)


def submanifold_pairs(coords: torch.Tensor, kernel_size: int) -> PairMap:
    """The :class:`PairMap` of a submanifold convolution, the centre offset as ``identity``.

    Only the offsets before the centre are searched: offsets ``k`` and ``K - 1 - k`` are opposite, so the pairs
    ``(j, i)`` of offset ``k`` (``coords_j = coords_i + offset_k``) are the pairs ``(i, j)`` of ``K - 1 - k``.
    """
    offsets = kernel_offsets(kernel_size, coords.device)
    m, centre = coords.shape[0], offsets.shape[0] // 2
    table = neighbour_table(coords, offsets[:centre]).t()
    offset, dst = torch.nonzero(table < m, as_tuple=True)
    src = table[offset, dst]
    counts = torch.bincount(offset, minlength=centre)
    counts = torch.cat([counts, counts.new_zeros(1), counts.flip(0)])
    bounds = (0, *torch.cumsum(counts, 0).tolist())
    return PairMap(torch.cat([src, dst.flip(0)]), torch.cat([dst, src.flip(0)]), bounds, m, centre)


def down_pairs(dmap: DownsampleMap) -> PairMap:
    """Kernel-2 stride-2 convolution: pairs ``(i, parent_i)`` grouped by ``slot_i``."""
    fine = torch.arange(dmap.parent.shape[0], device=dmap.parent.device)
    return _grouped(fine, dmap.parent, dmap.slot, 8, dmap.children.shape[0])


def up_pairs(dmap: DownsampleMap) -> PairMap:
    """Its transpose: pairs ``(parent_i, i)`` grouped by ``slot_i``."""
    fine = torch.arange(dmap.parent.shape[0], device=dmap.parent.device)
    return _grouped(dmap.parent, fine, dmap.slot, 8, dmap.parent.shape[0])
