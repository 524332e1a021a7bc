"""``torch.nn`` layers on :class:`SparseTensor`: convolutions (through a backend), batch norm, activation.

Weights have layout (kernel_volume, C_in, C_out), kernel offsets ordered as in
:func:`~models.students.sparse.kernel_map.kernel_offsets`; initialisation is He et al. (ICCV 2015) normal with
``fan_in = kernel_volume * C_in`` (MinkowskiEngine's default); biases are uniform in ``+-1 / sqrt(fan_in)``
(``nn.Linear``'s default).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .backends import get_backend
from .tensor import SparseTensor


def _he_normal(kernel_volume: int, c_in: int, c_out: int) -> nn.Parameter:
    weight = torch.empty(kernel_volume, c_in, c_out)
    nn.init.normal_(weight, std=math.sqrt(2.0 / (kernel_volume * c_in)))
    return nn.Parameter(weight)


class SubmanifoldConv3d(nn.Module):
    """Submanifold convolution: odd ``kernel_size``, stride 1, outputs on the input sites.

    ``y_i = b + sum_k W[k]^T x_{j(i, k)}``, ``j(i, k)`` the active site at ``coords_i + offset_k``.
    ``kernel_size = 1`` is a per-site linear map and needs no kernel map.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = False,
        backend: str = "torch",
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"submanifold convolution needs an odd kernel, got {kernel_size}")
        self.kernel_size = kernel_size
        self.backend = backend
        self._impl = get_backend(backend)
        self.weight = _he_normal(kernel_size**3, in_channels, out_channels)
        bound = 1.0 / math.sqrt(kernel_size**3 * in_channels)  # nn.Linear's bias initialisation
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None

    def forward(self, x: SparseTensor) -> SparseTensor:
        if self.kernel_size == 1:
            y = x.replace(x.feats @ self.weight[0])
        else:
            y = self._impl.submanifold_conv(x, self.weight, self.kernel_size)
        return y if self.bias is None else y.replace(y.feats + self.bias)


class DownConv3d(nn.Module):
    """Strided convolution, kernel 2, stride 2: ``y_p = sum_{i: floor(x_i / 2) = p} W[slot_i]^T x_i``."""

    def __init__(self, in_channels: int, out_channels: int, backend: str = "torch") -> None:
        super().__init__()
        self.backend = backend
        self._impl = get_backend(backend)
        self.weight = _he_normal(8, in_channels, out_channels)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self._impl.down_conv(x, self.weight)


class UpConv3d(nn.Module):
    """Transposed convolution, kernel 2, stride 2, onto the finer sites:
    ``y_i = W[slot_i]^T x_{parent_i}``."""

    def __init__(self, in_channels: int, out_channels: int, backend: str = "torch") -> None:
        super().__init__()
        self.backend = backend
        self._impl = get_backend(backend)
        self.weight = _he_normal(8, in_channels, out_channels)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self._impl.up_conv(x, self.weight)


class SparseBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the features of all active sites of the batch."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


class SparseReLU(nn.Module):
    """``max(0, x)`` on the features; ``inplace=True`` overwrites them (safe after batch norm, whose backward
    needs its input, not its output)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(torch.relu_(x.feats) if self.inplace else torch.relu(x.feats))
