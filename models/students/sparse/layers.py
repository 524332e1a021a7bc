"""``torch.nn`` layers on :class:`SparseTensor`: convolutions (through a backend), batch norm, activation.

Weights have layout (kernel_volume, C_in, C_out) (MinkowskiEngine's ``kernel`` layout), kernel offsets ordered as
in :func:`~models.students.sparse.kernel_map.kernel_offsets`. Two initialisations (argument ``init``):

- ``"he"`` (the default; this project's original choice, not MinkowskiEngine's): weights He et al. (ICCV 2015)
  normal, ``std = sqrt(2 / n)``, ``n = C_in * kernel_volume`` (the fan-in, also for :class:`UpConv3d`); biases
  uniform in ``+-1 / sqrt(n)``;
- ``"minkowski"``: MinkowskiEngine's default (``MinkowskiConvolutionBase.reset_parameters`` in
  ``MinkowskiEngine/MinkowskiConvolution.py``, NVIDIA/MinkowskiEngine @ 02fc608), which SLidR keeps: weights and
  biases uniform in ``+-1 / sqrt(n)``, ``n = C_in * kernel_volume``, and ``n = C_out * kernel_volume`` for the
  transposed convolution :class:`UpConv3d` (``reset_parameters(is_transpose=True)``).

Batch norm starts at weight 1, bias 0 (``nn.BatchNorm1d``'s default; SLidR's ``ResNetBase.weight_initialization``,
``model/resnet.py``, sets the same).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from .backends import get_backend
from .tensor import SparseTensor

INITS = ("he", "minkowski")


def init_fan(kernel_volume: int, c_in: int, c_out: int, init: str, transposed: bool = False) -> int:
    """``n`` of the initialisation: ``c_in * kernel_volume``; ``c_out * kernel_volume`` for a transposed
    convolution under ``"minkowski"`` (``"he"`` always uses the fan-in)."""
    if init not in INITS:
        raise ValueError(f"unknown initialisation {init!r}; available: {', '.join(INITS)}")
    return (c_out if transposed and init == "minkowski" else c_in) * kernel_volume


def _conv_params(
    kernel_volume: int, c_in: int, c_out: int, bias: bool, init: str, transposed: bool = False
) -> tuple[nn.Parameter, nn.Parameter | None]:
    """Weight (kernel_volume, c_in, c_out), then the optional bias (c_out,): drawn in MinkowskiEngine's order."""
    n = init_fan(kernel_volume, c_in, c_out, init, transposed)
    bound = 1.0 / math.sqrt(n)
    weight = torch.empty(kernel_volume, c_in, c_out)
    if init == "he":
        nn.init.normal_(weight, std=math.sqrt(2.0 / n))
    else:
        nn.init.uniform_(weight, -bound, bound)
    b = nn.Parameter(torch.empty(c_out).uniform_(-bound, bound)) if bias else None
    return nn.Parameter(weight), b


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
        init: str = "he",
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"submanifold convolution needs an odd kernel, got {kernel_size}")
        self.kernel_size = kernel_size
        self.backend = backend
        self._impl = get_backend(backend)
        self.weight, self.bias = _conv_params(kernel_size**3, in_channels, out_channels, bias, init)

    def forward(self, x: SparseTensor) -> SparseTensor:
        if self.kernel_size == 1:
            return x.replace(self.pointwise(x.feats))
        y = self._impl.submanifold_conv(x, self.weight, self.kernel_size)
        return y if self.bias is None else y.replace(y.feats + self.bias)

    def pointwise(self, feats: torch.Tensor) -> torch.Tensor:
        """A ``kernel_size = 1`` convolution on feature rows alone, ``y = x W[0] + b``: it reads no neighbour,
        so any subset of the sites' rows can be mapped."""
        if self.kernel_size != 1:
            raise ValueError(f"pointwise needs a 1x1x1 kernel; this convolution's kernel is {self.kernel_size}")
        y = feats @ self.weight[0]
        return y if self.bias is None else y + self.bias


class DownConv3d(nn.Module):
    """Strided convolution, kernel 2, stride 2: ``y_p = sum_{i: floor(x_i / 2) = p} W[slot_i]^T x_i``."""

    def __init__(self, in_channels: int, out_channels: int, backend: str = "torch", init: str = "he") -> None:
        super().__init__()
        self.backend = backend
        self._impl = get_backend(backend)
        self.weight, _ = _conv_params(8, in_channels, out_channels, False, init)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self._impl.down_conv(x, self.weight)


class UpConv3d(nn.Module):
    """Transposed convolution, kernel 2, stride 2, onto the finer sites:
    ``y_i = W[slot_i]^T x_{parent_i}``."""

    def __init__(self, in_channels: int, out_channels: int, backend: str = "torch", init: str = "he") -> None:
        super().__init__()
        self.backend = backend
        self._impl = get_backend(backend)
        self.weight, _ = _conv_params(8, in_channels, out_channels, False, init, transposed=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self._impl.up_conv(x, self.weight)


def _sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    total = x.contiguous().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


class _AllReduceSum(torch.autograd.Function):
    """Sum of ``x`` over the ranks, differentiable: the gradient is the sum of the ranks' gradients (every rank
    runs the backward). Replaces the deprecated ``torch.distributed.nn.functional.all_reduce``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return _sum_over_ranks(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _sum_over_ranks(grad)


class SparseBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the features of all active sites of the batch.

    With ``sync = True``, in training mode inside a ``torch.distributed`` process group of more than one process,
    the statistics are those of the sites of *all* ranks (synchronised batch norm, as ``nn.SyncBatchNorm``, which
    runs on GPUs only): ``mean = sum_r S_r / sum_r n_r`` and ``var = sum_r sum_i (x_i - mean)^2 / sum_r n_r``
    (biased, two passes, float64 accumulation like PyTorch's CPU kernel), summed with the differentiable
    :class:`_AllReduceSum`; the running variance is updated with the unbiased
    ``var * n / (n - 1)``. Every rank must call it (one collective per pass).
    """

    sync: bool = False

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        if self.sync and self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return x.replace(self._synchronised(x.feats))
        return x.replace(super().forward(x.feats))

    def _synchronised(self, feats: torch.Tensor) -> torch.Tensor:
        all_reduce = _AllReduceSum.apply
        c = feats.shape[1]
        count = torch.tensor([feats.shape[0]], dtype=torch.float64, device=feats.device)
        totals = all_reduce(torch.cat([feats.sum(0, dtype=torch.float64), count]))
        n = totals[c]
        mean = (totals[:c] / n).to(feats.dtype)
        centered = feats - mean
        var = (all_reduce((centered * centered).sum(0, dtype=torch.float64)) / n).to(feats.dtype)
        out = centered * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (n / torch.clamp(n - 1, min=1)).to(var.dtype)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
                self.num_batches_tracked.add_(1)
        return out


def synchronise_batch_norms(module: nn.Module, sync: bool = True) -> int:
    """Set :attr:`SparseBatchNorm.sync` on every sparse batch norm of ``module``; returns how many."""
    norms = [m for m in module.modules() if isinstance(m, SparseBatchNorm)]
    for norm in norms:
        norm.sync = sync
    return len(norms)


class SparseReLU(nn.Module):
    """``max(0, x)`` on the features; ``inplace=True`` overwrites them (safe after batch norm, whose backward
    needs its input, not its output)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(torch.relu_(x.feats) if self.inplace else torch.relu(x.feats))
