"""Sparse 3D convolution for the students: tensor, kernel maps, layers, backends (``torch``, ``spconv``,
``torchsparse``)."""

from .backends import SparseBackend, TorchBackend, available_backends, get_backend
from .kernel_map import DownsampleMap, downsample_map, kernel_offsets, neighbour_table
from .layers import DownConv3d, SparseBatchNorm, SparseReLU, SubmanifoldConv3d, UpConv3d, synchronise_batch_norms
from .tensor import KernelMapCache, SparseTensor, cat

__all__ = [
    "DownConv3d",
    "DownsampleMap",
    "KernelMapCache",
    "SparseBackend",
    "SparseBatchNorm",
    "synchronise_batch_norms",
    "SparseReLU",
    "SparseTensor",
    "SubmanifoldConv3d",
    "TorchBackend",
    "UpConv3d",
    "available_backends",
    "cat",
    "downsample_map",
    "get_backend",
    "kernel_offsets",
    "neighbour_table",
]
