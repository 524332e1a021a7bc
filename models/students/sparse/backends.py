"""The sparse-convolution interface and its pure-PyTorch backend.

A backend implements three convolutions on :class:`SparseTensor` with weights in the layout
(kernel_volume, C_in, C_out) and kernel offsets ordered as in :func:`kernel_offsets`:

- ``submanifold_conv``: odd kernel, stride 1, outputs on the input sites (Graham et al., CVPR 2018);
- ``down_conv``: kernel 2, stride 2, outputs on the coarse sites ``floor(x / 2)`` that have an active child;
- ``up_conv``: kernel 2, stride 2, transposed, outputs exactly on the finer sites the matching
``down_conv`` came
  from (MinkowskiEngine's generative-off transposed convolution).

Each equals ``torch.nn.functional.conv3d`` / ``conv_transpose3d`` on a dense grid, read at the active sites.
Backends: ``torch`` (always available, any device), ``spconv`` (``models.students.sparse.spconv_backend``,
when the ``spconv`` package is installed) and ``torchsparse`` (``models.students.sparse.torchsparse_backend``,
when torchsparse 2.1 is built from source; docs/implementation.md#torchsparse-backend-optional-build-from-source).
"""

from __future__ import annotations

from typing import Protocol

import torch

from .functional import PairConvFunction
from .kernel_map import PairMap, down_pairs, downsample_map, submanifold_pairs, up_pairs
from .tensor import SparseTensor


class SparseBackend(Protocol):
    """The three sparse convolutions a MinkUNet needs."""

    name: str

    def submanifold_conv(self, x: SparseTensor, weight: torch.Tensor, kernel_size: int) -> SparseTensor: ...

    def down_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor: ...

    def up_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor: ...


class TorchBackend:
    """Pure-PyTorch backend: gather - GEMM - scatter on cached pair maps, hand-written backward."""

    name = "torch"

    def _pairs(self, x: SparseTensor, kernel_size: int) -> PairMap:
        key = ("torch", "subm", x.stride, kernel_size)
        return x.cache.get(key, lambda: submanifold_pairs(x.coords, kernel_size))

    def _down(self, x: SparseTensor) -> tuple[torch.Tensor, PairMap, PairMap]:
        def build() -> tuple[torch.Tensor, PairMap, PairMap]:
            dmap = downsample_map(x.coords)
            return dmap.coarse_coords, down_pairs(dmap), up_pairs(dmap)

        return x.cache.get(("torch", "down", x.stride), build)

    def submanifold_conv(self, x: SparseTensor, weight: torch.Tensor, kernel_size: int) -> SparseTensor:
        """``y_i = sum_k W[k]^T x_{j(i, k)}`` over the active neighbours ``j(i, k) = coords_i + offset_k``."""
        return x.replace(PairConvFunction.apply(x.feats, weight, self._pairs(x, kernel_size)))

    def down_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor:
        """``y_p = sum_{i: floor(x_i / 2) = p} W[slot_i]^T x_i`` on the coarse sites p."""
        coarse, pairs, _ = self._down(x)
        x.cache.put(("coords", x.stride), x.coords)
        return SparseTensor(coarse, PairConvFunction.apply(x.feats, weight, pairs), x.stride * 2, x.cache)

    def up_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor:
        """``y_i = W[slot_i]^T x_{parent_i}`` on the finer sites recorded by the matching ``down_conv``."""
        fine = x.stride // 2
        if ("torch", "down", fine) not in x.cache:
            raise KeyError(f"no down_conv from stride {fine} recorded in this tensor's cache")
        _, _, pairs = x.cache[("torch", "down", fine)]
        feats = PairConvFunction.apply(x.feats, weight, pairs)
        return SparseTensor(x.cache[("coords", fine)], feats, fine, x.cache)


BACKENDS = ("torch", "spconv", "torchsparse")


def get_backend(name: str) -> SparseBackend:
    """The backend called ``name`` (one of :data:`BACKENDS`); ``ImportError`` when its package is missing."""
    if name == "torch":
        return TorchBackend()
    if name == "spconv":
        from .spconv_backend import SpconvBackend  # imports the optional spconv package at its top: only when chosen

        return SpconvBackend()
    if name == "torchsparse":
        from .torchsparse_backend import TorchsparseBackend  # imports the optional torchsparse: only when chosen

        return TorchsparseBackend()
    raise ValueError(f"unknown sparse backend {name!r}; choose one of {', '.join(BACKENDS)}")


def available_backends() -> list[str]:
    """Names of the backends importable here."""
    names = []
    for name in BACKENDS:
        try:
            get_backend(name)
        except ImportError:
            continue
        names.append(name)
    return names
