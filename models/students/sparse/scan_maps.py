"""Voxels and kernel maps kept per scan and merged into a batch's (a suite without augmentation reads the same
scans again and again: their voxelisation and kernel maps need building once per process, not once per step).

The scans of a batch are independent blocks: coordinates are ordered by ``(batch, x, y, z)``, so a batch's voxels
are its scans' voxels one after the other, and no kernel offset reaches across scans (the batch index is a
coordinate). A batch's maps are therefore its scans' maps with the row indices shifted by the sites of the scans
before, merged segment by segment (kernel offset by kernel offset), and in the very order the batch-wide builders
produce, so that every sum over pairs runs in the same order and the network's outputs are bit-for-bit those of
the batch-wide maps:

- a submanifold map (:func:`~models.students.sparse.kernel_map.submanifold_pairs`) lists the offsets before the
  centre by output row, scan after scan, and the opposite offsets as that list reversed: their segments hold the
  scans in reverse order;
- a downsampling map and its transpose (:func:`~models.students.sparse.kernel_map.down_pairs`,
  :func:`~models.students.sparse.kernel_map.up_pairs`) list each offset's pairs by fine row: scan after scan.

:class:`ScanMaps` builds one scan's maps lazily (batch column 0); :class:`MergedMaps` is the
:class:`~models.students.sparse.tensor.KernelMapCache` of a batch that answers the torch backend's keys by merging
its scans' maps (other keys, e.g. another backend's, are built batch-wide as usual).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

from .kernel_map import PairMap, down_pairs, downsample_map, submanifold_pairs, up_pairs
from .tensor import KernelMapCache


class ScanMaps:
    """The kernel maps of one scan, built on first use: ``("torch", "subm", stride, kernel_size)`` ->
    :class:`PairMap`; ``("torch", "down", stride)`` -> ``(coarse coords, down pairs, up pairs)`` (the torch
    backend's cache keys and values). ``coords`` (M, 4) are the scan's stride-1 voxels with batch column 0."""

    def __init__(self, coords: torch.Tensor) -> None:
        self._coords = {1: coords}
        self._maps: dict[Hashable, Any] = {}

    def coords(self, stride: int) -> torch.Tensor:
        """The scan's sites at ``stride`` (a power of 2), downsampling as needed."""
        if stride not in self._coords:
            self.get(("torch", "down", stride // 2))
        return self._coords[stride]

    def get(self, key: tuple[Any, ...]) -> Any:
        """The map of ``key``, built once."""
        if key not in self._maps:
            kind, stride = key[1], key[2]
            if kind == "subm":
                self._maps[key] = submanifold_pairs(self.coords(stride), key[3])
            else:
                dmap = downsample_map(self.coords(stride))
                self._coords[2 * stride] = dmap.coarse_coords
                self._maps[key] = (dmap.coarse_coords, down_pairs(dmap), up_pairs(dmap))
        return self._maps[key]


def _offsets(counts: Sequence[int]) -> list[int]:
    out, total = [], 0
    for n in counts:
        out.append(total)
        total += n
    return out


def merge_pairs(
    maps: Sequence[PairMap], src_offsets: Sequence[int], dst_offsets: Sequence[int], reverse_from: int | None = None
) -> PairMap:
    """The pair map of a batch from its scans' ``maps`` (same kernel, same ``identity``): scan ``s``'s rows shifted
    by ``src_offsets[s]`` / ``dst_offsets[s]``; segment ``k`` holds the scans in order, or in reverse order from
    segment ``reverse_from`` on (module docstring)."""
    first = maps[0]
    n_segments = len(first.bounds) - 1
    srcs = [m.src + off for m, off in zip(maps, src_offsets, strict=True)]
    dsts = [m.dst + off for m, off in zip(maps, dst_offsets, strict=True)]
    src_parts, dst_parts, bounds = [], [], [0]
    forward, backward = list(range(len(maps))), list(range(len(maps)))[::-1]
    for k in range(n_segments):
        order = backward if reverse_from is not None and k >= reverse_from else forward
        for s in order:
            lo, hi = maps[s].bounds[k], maps[s].bounds[k + 1]
            if hi > lo:
                src_parts.append(srcs[s][lo:hi])
                dst_parts.append(dsts[s][lo:hi])
        bounds.append(bounds[-1] + sum(m.bounds[k + 1] - m.bounds[k] for m in maps))
    empty = first.src.new_zeros(0)
    return PairMap(
        torch.cat(src_parts) if src_parts else empty,
        torch.cat(dst_parts) if dst_parts else empty,
        tuple(bounds),
        sum(m.n_out for m in maps),
        first.identity,
    )


def with_batch_index(coords: torch.Tensor, index: int) -> torch.Tensor:
    """``coords`` (batch column 0) with batch column ``index``."""
    out = coords.clone()
    out[:, 0] = index
    return out


class MergedMaps(KernelMapCache):
    """The kernel-map cache of a batch made of ``scans`` (:class:`ScanMaps`, in batch order, with batch indices
    ``indices``): the torch backend's submanifold and downsampling maps are merged from the scans' (bit-identical
    to building them on the batch, module docstring); every other key is built by its ``build`` as usual."""

    def __init__(self, scans: Sequence[ScanMaps], indices: Sequence[int]) -> None:
        super().__init__()
        self.scans, self.indices = list(scans), list(indices)

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        if key not in self:
            mergeable = isinstance(key, tuple) and len(key) >= 3 and key[0] == "torch" and key[1] in ("subm", "down")
            self.put(key, self._merge(key) if mergeable else build())
        return self[key]

    def _merge(self, key: tuple[Any, ...]) -> Any:
        stride = key[2]
        fine = _offsets([len(s.coords(stride)) for s in self.scans])
        parts = [s.get(key) for s in self.scans]
        if key[1] == "subm":
            return merge_pairs(parts, fine, fine, reverse_from=parts[0].identity + 1)
        coarse = _offsets([len(p[0]) for p in parts])
        coords = torch.cat([with_batch_index(p[0], b) for p, b in zip(parts, self.indices, strict=True)])
        return (
            coords,
            merge_pairs([p[1] for p in parts], fine, coarse),
            merge_pairs([p[2] for p in parts], coarse, fine),
        )
