"""The sparse tensor of the student networks: integer coordinates, features, tensor stride, kernel-map cache."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch


class KernelMapCache:
    """Kernel maps and coordinate sets of one forward pass, shared by every tensor derived from one input.

    A map is built the first time a layer asks for it (``get(key, build)``) and reused by every later layer at
    the same resolution; downsampling layers also record the coordinates of each stride so that transposed
    convolutions can return exactly onto them.
    """

    def __init__(self) -> None:
        self._maps: dict[Hashable, Any] = {}

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The cached value of ``key``, built by ``build()`` on first use."""
        if key not in self._maps:
            self._maps[key] = build()
        return self._maps[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Stores ``value`` under ``key`` (overwrites)."""
        self._maps[key] = value

    def __contains__(self, key: Hashable) -> bool:
        return key in self._maps

    def __getitem__(self, key: Hashable) -> Any:
        return self._maps[key]


@dataclass
class SparseTensor:
    """Features on active voxels.

    ``coords`` (M, 4) int64 rows ``(batch, x, y, z)`` in units of this tensor's own grid (a tensor of stride
    ``s`` has coordinates ``floor(voxel / s)`` of the stride-1 voxels), ``feats`` (M, C), ``stride`` the tensor
    stride relative to the input voxels, ``cache`` the kernel maps shared along one forward pass.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    stride: int = 1
    cache: KernelMapCache = field(default_factory=KernelMapCache)

    def __post_init__(self) -> None:
        if self.coords.ndim != 2 or self.coords.shape[1] != 4:
            raise ValueError(f"coords must be (M, 4), got {tuple(self.coords.shape)}")
        if self.feats.ndim != 2 or self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"feats must be (M, C) with M = {self.coords.shape[0]}, got {tuple(self.feats.shape)}")

    @property
    def num_sites(self) -> int:
        """Number of active voxels M."""
        return self.coords.shape[0]

    def replace(self, feats: torch.Tensor) -> SparseTensor:
        """The same sites (coordinates, stride, cache) carrying ``feats``."""
        return SparseTensor(self.coords, feats, self.stride, self.cache)


def cat(*tensors: SparseTensor) -> SparseTensor:
    """Channel concatenation of tensors on the same sites (U-Net skip connections)."""
    first = tensors[0]
    for t in tensors[1:]:
        if t.coords is not first.coords and not torch.equal(t.coords, first.coords):
            raise ValueError("cat needs tensors on the same coordinates")
    return first.replace(torch.cat([t.feats for t in tensors], dim=1))
