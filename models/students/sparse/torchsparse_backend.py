"""Adapter for torchsparse 2.1 (Tang et al., MLSys 2022 / MICRO 2023; github.com/mit-han-lab/torchsparse).

torchsparse is not on PyPI: it is built from source
(docs/implementation.md#torchsparse-backend-optional-build-from-source). What runs here is its
gather-scatter dataflow (``GatherScatterConvolutionFuntion`` -> ``conv_{forward,backward}_gather_scatter_{cpu,cuda}``),
the only one of its three dataflows with a CPU kernel, on kernel maps built with its own hash ops
(``hash`` / ``kernel_hash`` and the hash query). Its high-level ``conv3d`` cannot run on CPU in 2.1: both kernel-map
modes need ``GPUHashTable`` / ``build_kernel_map_*_hashmap``, which exist only in CUDA builds.

Kernel maps: ``results[k, j]`` = the input site at ``q_j + offset_k`` (or -1), ``q_j`` the output sites in the input's
units (the sites themselves for ``submanifold_conv``, ``2 * p`` for the coarse sites ``p`` of ``down_conv``),
offsets in this project's :func:`kernel_offsets` order; the (input, output) pairs grouped by ``k`` are
torchsparse's ``nbmaps`` / ``nbsizes``. ``up_conv`` runs the matching down map transposed. So the weights
(kernel_volume, C_in, C_out) are torchsparse's layout and order as they are; torchsparse's own ``Conv3d`` orders
odd kernels with x fastest instead (:func:`weight_from_torchsparse` converts its checkpoints).

Coordinates: torchsparse 2.1 tensors are (batch, x, y, z) (2.0 had batch last), but its CPU ``kernel_hash`` adds the
offsets to columns 0-2 and its CUDA one to columns 1-3; rows are handed over as (x, y, z, batch) on CPU and
(batch, x, y, z) on CUDA. A site is found by its 64-bit hash alone (FNV-1a, 60 bits kept on CPU), as in torchsparse.

dtype: the CPU kernels read float32 only (``data_ptr<float>``); other dtypes raise ``TypeError`` on CPU.

Threads: the CPU gather and scatter open an OpenMP parallel region per row (over its channels); with 2 threads
a MinkUNet forward + backward took several times as long as with one, a layer more on a loaded machine, so the
CPU kernels run with ``torch.set_num_threads(1)`` (process-wide while they run, restored afterwards).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

try:
    import torchsparse.backend as ts_backend
    import torchsparse.nn.functional as ts_functional
    from torchsparse.nn.functional.conv.func.gather_scatter import GatherScatterConvolutionFuntion
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the 'torchsparse' backend needs torchsparse 2.1 built from source (see "
        "docs/implementation.md#torchsparse-backend-optional-build-from-source)"
    ) from error

from .kernel_map import kernel_offsets
from .tensor import SparseTensor

_CONFIG = {"epsilon": 0.0, "mm_thresh": 0}  # the gather-scatter settings torchsparse defaults to


def weight_from_torchsparse(kernel: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """A torchsparse ``Conv3d.kernel`` ((K, C_in, C_out), or (C_in, C_out) for kernel 1) in this project's layout.

    torchsparse orders odd kernels with x fastest (``get_kernel_offsets``; CUDA ``lookup_coords_kernel``),
    ``k = ix + n iy + n^2 iz``, this project with z fastest; even kernels (x slowest) agree. The map is its own
    inverse, so it also converts this project's weights to torchsparse's.
    """
    if kernel.ndim == 2:
        return kernel.unsqueeze(0)
    if kernel_size % 2 == 0:
        return kernel
    n = kernel_size
    return kernel.reshape(n, n, n, *kernel.shape[1:]).permute(2, 1, 0, 3, 4).reshape(kernel.shape)


def _device_rows(coords: torch.Tensor) -> torch.Tensor:
    """(batch, x, y, z) int64 rows as the int32 rows torchsparse's hash ops on this device expect."""
    rows = coords if coords.device.type == "cuda" else coords[:, [1, 2, 3, 0]]
    return rows.to(torch.int32).contiguous()


def _query(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Index in ``references`` of each hash in ``queries`` (any shape), -1 where absent."""
    if queries.device.type == "cuda":
        return ts_functional.sphashquery(queries, references)
    # sphashquery builds a GPUHashTable even on CPU, which CPU builds lack: call the CPU op directly.
    indices = torch.arange(references.shape[0], dtype=torch.int64)
    found = ts_backend.hash_query_cpu(queries.reshape(-1).contiguous(), references.contiguous(), indices)
    return (found - 1).view(queries.shape)


def _kernel_map(results: torch.Tensor, num_in: int) -> dict:
    """torchsparse's gather-scatter kernel map of ``results`` (K, N_out), as ``build_kmap_Gather_Scatter_hashmap``."""
    active = results != -1
    kj = torch.nonzero(active)
    nbmaps = torch.stack([results[kj[:, 0], kj[:, 1]], kj[:, 1]], 1).to(torch.int32).contiguous()
    nbsizes = active.sum(1).to(torch.int32)
    n_out = results.shape[1]
    if results.device.type == "cuda":  # masks for torchsparse's benchmark (adaptive grouping) mode
        input_mask, output_mask = ts_backend.build_mask_from_kmap(num_in, n_out, nbmaps, nbsizes)
    else:
        input_mask = output_mask = torch.empty(0, dtype=torch.int32)
    return {
        "nbmaps": nbmaps,
        "nbsizes": nbsizes.cpu(),
        "sizes": (num_in, n_out),
        "input_mask": input_mask,
        "output_mask": output_mask,
    }


@contextmanager
def _one_cpu_thread(t: torch.Tensor) -> Iterator[None]:
    threads = torch.get_num_threads()
    if t.device.type == "cuda" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _GatherScatter(GatherScatterConvolutionFuntion):
    """torchsparse's gather-scatter function, its CPU kernels run on one thread (module docstring)."""

    @staticmethod
    def forward(ctx, feats, weight, kmap, config, transposed):
        with _one_cpu_thread(feats):
            return GatherScatterConvolutionFuntion.forward(ctx, feats, weight, kmap, config, transposed)

    @staticmethod
    def backward(ctx, grad_output):
        with _one_cpu_thread(grad_output):
            return GatherScatterConvolutionFuntion.backward(ctx, grad_output)


def _check_dtype(feats: torch.Tensor, weight: torch.Tensor) -> None:
    if feats.device.type != "cuda" and (feats.dtype != torch.float32 or weight.dtype != torch.float32):
        raise TypeError(
            f"torchsparse's CPU kernels take float32 only, got features {feats.dtype} and weights {weight.dtype}"
        )


class TorchsparseBackend:
    """torchsparse's gather-scatter convolutions behind the :class:`SparseBackend` interface."""

    name = "torchsparse"

    def _hashes(self, x: SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``'s sites as torchsparse rows and their hashes (cached per stride)."""

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            rows = _device_rows(x.coords)
            return rows, ts_functional.sphash(rows)

        return x.cache.get(("torchsparse", "hash", x.stride), build)

    def _offsets(self, kernel_size: int, device: torch.device) -> torch.Tensor:
        return kernel_offsets(kernel_size, device).to(torch.int32)

    def submanifold_conv(self, x: SparseTensor, weight: torch.Tensor, kernel_size: int) -> SparseTensor:
        """``y_i = sum_k W[k]^T x_{j(i, k)}``, ``j(i, k)`` the active site at ``coords_i + offset_k``."""
        _check_dtype(x.feats, weight)
        if x.num_sites == 0:
            return x.replace(x.feats.new_zeros(0, weight.shape[2]))

        def build() -> dict:
            rows, hashes = self._hashes(x)
            queries = ts_functional.sphash(rows, self._offsets(kernel_size, rows.device))
            return _kernel_map(_query(queries, hashes), x.num_sites)

        kmap = x.cache.get(("torchsparse", "subm", x.stride, kernel_size), build)
        return x.replace(_GatherScatter.apply(x.feats, weight, kmap, _CONFIG, False))

    def down_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor:
        """Kernel 2, stride 2 onto the coarse sites ``floor(x / 2)`` (torchsparse's ``spdownsample``)."""
        _check_dtype(x.feats, weight)
        x.cache.put(("coords", x.stride), x.coords)
        if x.num_sites == 0:
            x.cache.put(("torchsparse", "down", x.stride), None)
            return SparseTensor(x.coords, x.feats.new_zeros(0, weight.shape[2]), 2 * x.stride, x.cache)

        def build() -> tuple[torch.Tensor, dict]:
            _, hashes = self._hashes(x)
            coarse = ts_functional.spdownsample(x.coords.to(torch.int32), 2, 2).to(torch.int64)
            parents = coarse.clone()
            parents[:, 1:] *= 2
            queries = ts_functional.sphash(_device_rows(parents), self._offsets(2, coarse.device))
            return coarse, _kernel_map(_query(queries, hashes), x.num_sites)

        coarse, kmap = x.cache.get(("torchsparse", "down", x.stride), build)
        feats = _GatherScatter.apply(x.feats, weight, kmap, _CONFIG, False)
        return SparseTensor(coarse, feats, 2 * x.stride, x.cache)

    def up_conv(self, x: SparseTensor, weight: torch.Tensor) -> SparseTensor:
        """The matching ``down_conv``'s map transposed, onto exactly the finer sites it came from."""
        _check_dtype(x.feats, weight)
        fine = x.stride // 2
        if ("torchsparse", "down", fine) not in x.cache:
            raise KeyError(f"no down_conv from stride {fine} recorded in this tensor's cache")
        fine_coords = x.cache[("coords", fine)]
        if x.num_sites == 0:
            return SparseTensor(fine_coords, x.feats.new_zeros(0, weight.shape[2]), fine, x.cache)
        _, kmap = x.cache[("torchsparse", "down", fine)]
        feats = _GatherScatter.apply(x.feats, weight, kmap, _CONFIG, True)
        return SparseTensor(fine_coords, feats, fine, x.cache)
