"""Adapter for ``spconv`` 2.x (Yan et al., SECOND, Sensors 2018; github.com/traveller59/spconv), with its CPU fixes.

spconv 2.3.8's CPU path has two defects, both fixed here and only here (:func:`patch_spconv_cpu`):

1. its backward (``ops.indice_conv_backward``) calls ``torch.cuda.current_stream()`` even for CPU tensors, which
   raises on CPU-only torch builds -> the stream lookup returns 0 when CUDA is unavailable;
2. its ``SpconvOps.scatter_add_cpu`` races when more than one thread runs (silently wrong sums) -> replaced by
   ``torch.Tensor.index_add_`` on views of the same memory. (It is slower than the original on a MinkUNet
   forward + backward; the race did not show in this project's 2-thread tests.)

Coordinates are shifted to spconv's non-negative grid by an origin divisible by every stride, so that spconv's
coarse sites ``floor(x / 2)`` are this project's coarse sites. Weights (K, C_in, C_out) become spconv's KRSC
layout (C_out, kx, ky, kz, C_in) with an autograd-tracked permutation.
"""

from __future__ import annotations

import torch

try:
    import spconv.pytorch.functional as spconv_functional
    import spconv.pytorch.ops as spconv_ops
    from cumm import tensorview as tv
    from spconv.core import ConvAlgo
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("the 'spconv' backend needs spconv 2.x: pip install 'lidar-distill-bench[spconv]'") from error

from .tensor import SparseTensor

ORIGIN_ALIGN = 1 << 12  # origin multiple of every stride up to 4096
_ALGO = ConvAlgo.Native


class _ScatterAddFixedOps:
    """``SpconvOps`` with ``scatter_add_cpu`` replaced by a race-free ``index_add_``."""

    def __init__(self, ops: object) -> None:
        self._ops = ops

    def __getattr__(self, name: str) -> object:
        return getattr(self._ops, name)

    @staticmethod
    def scatter_add_cpu(out: tv.Tensor, buffer: tv.Tensor, indices: tv.Tensor) -> None:
        """``out[indices[j]] += buffer[j]`` for ``j < len(indices)``."""
        idx = torch.from_numpy(indices.numpy_view()).to(torch.int64)
        src = torch.from_numpy(buffer.numpy_view())[: idx.shape[0]]
        torch.from_numpy(out.numpy_view()).index_add_(0, idx, src)


def _current_stream_or_zero() -> int:
    return torch.cuda.current_stream().cuda_stream if torch.cuda.is_available() else 0


def patch_spconv_cpu() -> None:
    """Applies the two CPU fixes to ``spconv.pytorch.ops`` (idempotent)."""
    if not isinstance(spconv_ops.SpconvOps, _ScatterAddFixedOps):
        spconv_ops.SpconvOps = _ScatterAddFixedOps(spconv_ops.SpconvOps)
    spconv_ops.get_current_stream = _current_stream_or_zero


def _krsc(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    k, c_in, c_out = weight.shape
    return weight.view(kernel_size, kernel_size, kernel_size, c_in, c_out).permute(4, 0, 1, 2, 3).contiguous()


class SpconvBackend:
    """spconv's native (gather-GEMM-scatter) algorithm behind the :class:`SparseBackend` interface."""

    name = "spconv"

    def __init__(self) -> None:
        patch_spconv_cpu()
        self._timer = spconv_functional.CUDAKernelTimer(False)

    def _grid(self, x: SparseTensor) -> tuple[torch.Tensor, list[int], int]:
        """spconv indices (int32, shifted), spatial shape and batch size of ``x``'s sites."""

        def build() -> tuple[torch.Tensor, list[int], int]:
            coords = x.coords
            origin = torch.zeros(3, dtype=torch.int64, device=coords.device)
            if ("spconv", "origin") in x.cache:
                origin = x.cache[("spconv", "origin")] // x.stride
            elif coords.shape[0]:
                align = ORIGIN_ALIGN // x.stride
                origin = torch.div(coords[:, 1:].amin(0), align, rounding_mode="floor") * align
                x.cache.put(("spconv", "origin"), origin * x.stride)
            shifted = coords.clone()
            shifted[:, 1:] -= origin
            high = shifted[:, 1:].amax(0) if coords.shape[0] else torch.zeros(3, dtype=torch.int64)
            shape = [int(v) + 2 + int(v) % 2 for v in high.tolist()]
            batch = int(coords[:, 0].max()) + 1 if coords.shape[0] else 1
            return shifted.to(torch.int32).contiguous(), shape, batch

        return x.cache.get(("spconv", "grid", x.stride), build)

    def submanifold_conv(self, x: SparseTensor, weight: torch.Tensor, kernel_size: int) -> SparseTensor:
        """spconv ``SubMConv3d`` semantics (equal to the torch backend's)."""
        if x.num_sites == 0:
            return x.replace(x.feats.new_zeros(0, weight.shape[2]))

        def build():
            indices, shape, batch = self._grid(x)
            r = kernel_size // 2
            _, pairs, num = spconv_ops.get_indice_pairs(
                indices,
                batch,
                shape,
                _ALGO,
                [kernel_size] * 3,
                [1] * 3,
                [r] * 3,
                [1] * 3,
                [0] * 3,
                True,
                False,
            )
            return pairs, num

        pairs, num = x.cache.get(("spconv", "subm", x.stride, kernel_size), build)
        feats = spconv_functional.indice_subm_conv(
            x.feats.contiguous(), _krsc(weight, kernel_size), pairs, num, x.num_sites, _ALGO, self._timer
        )
        return x.replace(feats)

    def down_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor:
        """spconv ``SparseConv3d(kernel 2, stride 2)``; records the pairs for the matching ``up_conv``."""
        x.cache.put(("coords", x.stride), x.coords)
        if x.num_sites == 0:
            x.cache.put(("spconv", "down", x.stride), None)
            return SparseTensor(x.coords, x.feats.new_zeros(0, weight.shape[2]), 2 * x.stride, x.cache)
        indices, shape, batch = self._grid(x)

        def build():
            out_ids, pairs, num = spconv_ops.get_indice_pairs(
                indices, batch, shape, _ALGO, [2] * 3, [2] * 3, [0] * 3, [1] * 3, [0] * 3, False, False
            )
            origin = x.cache[("spconv", "origin")] // (2 * x.stride)
            coarse = out_ids.to(torch.int64)
            coarse[:, 1:] += origin
            coarse_shape = [(s - 2) // 2 + 1 for s in shape]
            x.cache.put(("spconv", "grid", 2 * x.stride), (out_ids, coarse_shape, batch))
            return coarse, pairs, num

        coarse, pairs, num = x.cache.get(("spconv", "down", x.stride), build)
        feats = spconv_functional.indice_conv(
            x.feats.contiguous(), _krsc(weight, 2), pairs, num, coarse.shape[0], _ALGO, self._timer
        )
        return SparseTensor(coarse, feats, 2 * x.stride, x.cache)

    def up_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor:
        """spconv ``SparseInverseConv3d`` onto the sites of the matching ``down_conv``."""
        fine = x.stride // 2
        fine_coords = x.cache[("coords", fine)]
        if x.num_sites == 0:
            return SparseTensor(fine_coords, x.feats.new_zeros(0, weight.shape[2]), fine, x.cache)
        _, pairs, num = x.cache[("spconv", "down", fine)]
        feats = spconv_functional.indice_inverse_conv(
            x.feats.contiguous(), _krsc(weight, 2), pairs, num, fine_coords.shape[0], _ALGO, self._timer
        )
        return SparseTensor(fine_coords, feats, fine, x.cache)
