"""The sparse-convolution interface and its pure-PyTorch backend.

A backend implements three convolutions on :class:`SparseTensor` with weights in the layout
(kernel_volume, C_in, C_out) and kernel offsets ordered as in :func:`kernel_offsets`:

- ``submanifold_conv``: odd kernel, stride 1, outputs on the input sites (Graham et al., CVPR 2018);
- ``down_conv``: kernel 2, stride 2, outputs on the coarse sites ``floor(x / 2)`` that have an active child;
- ``up_conv``: kernel 2, stride 2, transposed, outputs exactly on the finer sites the matching
``down_conv`` came
  from (MinkowskiEngine's generative-off transposed convolution).

Each equals ``torch.nn.functional.conv3d`` / ``conv_transpose3d`` on a dense grid, read at the active sites.
Backends: ``torch`` (always available, any device) and ``spconv`` (``models.students.sparse.spconv_backend``,
when the ``spconv`` package is installed).
"""

from __future__ import annotations

from typing import Protocol

import torch

from .functional import DownConvFunction, SubmanifoldConvFunction, UpConvFunction
from .kernel_map import DownsampleMap, downsample_map, kernel_offsets, neighbour_table
from .tensor import SparseTensor


class SparseBackend(Protocol):
    """The three sparse convolutions a MinkUNet needs."""

    name: str

    def submanifold_conv(self, x: SparseTensor, weight: torch.Tensor, kernel_size: int) -> SparseTensor: ...

    def down_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor: ...

    def up_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor: ...


class TorchBackend:
    """Pure-PyTorch backend: fused gather + one GEMM per layer, hand-written backward (``functional.py``)."""

    name = "torch"

    def _table(self, x: SparseTensor, kernel_size: int) -> torch.Tensor:
        def build() -> torch.Tensor:
            return neighbour_table(x.coords, kernel_offsets(kernel_size, x.coords.device))

        return x.cache.get(("torch", "subm", x.stride, kernel_size), build)

    def _down(self, x: SparseTensor) -> tuple[DownsampleMap, torch.Tensor]:
        def build() -> tuple[DownsampleMap, torch.Tensor]:
            dmap = downsample_map(x.coords)
            return dmap, dmap.parent * 8 + dmap.slot

        return x.cache.get(("torch", "down", x.stride), build)

    def submanifold_conv(self, x: SparseTensor, weight: torch.Tensor, kernel_size: int) -> SparseTensor:
        """``y_i = sum_k W[k]^T x_{T[i, k]}`` over the active neighbours of site i."""
        table = self._table(x, kernel_size)
        return x.replace(SubmanifoldConvFunction.apply(x.feats, weight, table))

    def down_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor:
        """``y_p = sum_{i: floor(x_i / 2) = p} W[slot_i]^T x_i`` on the coarse sites p."""
        dmap, flat_slot = self._down(x)
        x.cache.put(("coords", x.stride), x.coords)
        feats = DownConvFunction.apply(x.feats, weight, dmap.children, flat_slot)
        return SparseTensor(dmap.coarse_coords, feats, x.stride * 2, x.cache)

    def up_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor:
        """``y_i = W[slot_i]^T x_{parent_i}`` on the finer sites recorded by the matching ``down_conv``."""
        fine = x.stride // 2
        if ("torch", "down", fine) not in x.cache:
            raise KeyError(f"no down_conv from stride {fine} recorded in this tensor's cache")
        dmap, flat_slot = x.cache[("torch", "down", fine)]
        feats = UpConvFunction.apply(x.feats, weight, dmap.children, flat_slot)
        return SparseTensor(x.cache[("coords", fine)], feats, fine, x.cache)


def get_backend(name: str) -> SparseBackend:
    """The backend called ``name`` (``torch`` or ``spconv``); ``ImportError`` when its package is missing."""
    if name == "torch":
        return TorchBackend()
    if name == "spconv":
        from .spconv_backend import SpconvBackend

        return SpconvBackend()
    raise ValueError(f"unknown sparse backend {name!r}; choose 'torch' or 'spconv'")


def available_backends() -> list[str]:
    """Names of the backends importable here."""
    names = ["torch"]
    try:
        get_backend("spconv")
    except ImportError:
        return names
    return [*names, "spconv"]
