"""Autograd function of the pure-PyTorch sparse convolutions: gather - GEMM - scatter, hand-written backward.

A convolution is a *pair map*: rows ``(src_p, dst_p)`` grouped by kernel offset ``k`` into contiguous segments
``[bounds[k], bounds[k + 1])``, so that ``Y[dst_p] += X[src_p] W[k]``. Per call (``P`` pairs):

- forward: ``G = X[src]``; ``B[seg_k] = G[seg_k] W[k]`` (one GEMM per offset); ``Y = scatter_add(dst, B)``;
- backward: ``D = dY[dst]``; ``dW[k] = G[seg_k]^T D[seg_k]``; ``dX = scatter_add(src, D[seg_k] W[k]^T)``.

Pairs are processed in chunks of whole offsets (about ``CHUNK_ROWS`` pairs; one gather and one scatter-add per
chunk) into reused buffers: a single (P, C) buffer would be a fresh ``mmap`` every call, and its page faults
cost as much as the gather itself.

The ``identity`` offset of a submanifold convolution (the kernel centre, where ``src = dst = i``) is left out
of the pairs and done as one dense product ``X W[centre]``, which also initialises the output.
``scatter_add_`` along dim 0 with a row-expanded index sums each row's contributions in a fixed order on the
CPU (deterministic; PyTorch lists only its CUDA version as non-deterministic). The gathered matrices hold only
active pairs, so no multiply-add is spent on absent neighbours.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .kernel_map import PairMap

CHUNK_ROWS = 1 << 15  # pairs per gather buffer: keeps buffers small enough to be reused, not page-faulted


def _chunks(pairs: PairMap, max_rows: int | None = None) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """Consecutive whole offset segments packed into chunks of about ``max_rows`` (default ``CHUNK_ROWS``)
    pairs: ``(lo, hi, [(k, lo_k, hi_k), ...])`` with segment bounds relative to ``lo``.
    """
    max_rows = CHUNK_ROWS if max_rows is None else max_rows
    b = pairs.bounds
    chunks: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    lo, segs = b[0], []
    for k in range(len(b) - 1):
        if b[k + 1] == b[k]:
            continue
        if segs and b[k + 1] - lo > max_rows:
            chunks.append((lo, b[k], segs))
            lo, segs = b[k], []
        segs.append((k, b[k] - lo, b[k + 1] - lo))
    if segs:
        chunks.append((lo, b[-1], segs))
    return chunks


def _scatter_rows(out: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> None:
    """``out[index[p]] += rows[p]`` (``scatter_add_`` with a row-expanded index)."""
    out.scatter_add_(0, index[:, None].expand(-1, rows.shape[1]), rows)


def _gather_mm_scatter(
    x: torch.Tensor, weight: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, chunks, out: torch.Tensor
) -> None:
    """``out[dst_p] += x[src_p] @ weight[k_p]``, one gather, one GEMM per offset and one scatter-add per chunk."""
    if not chunks:
        return
    rows = max(hi - lo for lo, hi, _ in chunks)
    gathered = x.new_empty(rows, x.shape[1])
    products = x.new_empty(rows, weight.shape[2])
    for lo, hi, segs in chunks:
        n = hi - lo
        torch.index_select(x, 0, src[lo:hi], out=gathered[:n])
        for k, a, b in segs:
            torch.mm(gathered[a:b], weight[k], out=products[a:b])
        _scatter_rows(out, dst[lo:hi], products[:n])


def pair_conv_forward(x: torch.Tensor, weight: torch.Tensor, pairs: PairMap) -> torch.Tensor:
    """``Y[dst_p] += X[src_p] W[k_p]`` (+ ``X W[identity]``), without autograd."""
    if pairs.identity >= 0:
        y = x @ weight[pairs.identity]
    else:
        y = x.new_zeros(pairs.n_out, weight.shape[2])
    _gather_mm_scatter(x, weight, pairs.src, pairs.dst, _chunks(pairs), y)
    return y


class PairConvFunction(torch.autograd.Function):
    """Sparse convolution on a :class:`PairMap` (see module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, pairs: PairMap):
        ctx.save_for_backward(x, weight)
        ctx.pairs = pairs
        return pair_conv_forward(x, weight, pairs)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        pairs: PairMap = ctx.pairs
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_out = grad_out.contiguous()
        grad_x = grad_w = None
        if need_x:
            if pairs.identity >= 0:
                grad_x = grad_out @ weight[pairs.identity].t()
            else:
                grad_x = x.new_zeros(x.shape)
        if need_w:
            grad_w = torch.zeros_like(weight)
            if pairs.identity >= 0:
                torch.mm(x.t(), grad_out, out=grad_w[pairs.identity])
        chunks = _chunks(pairs)
        if not chunks or not (need_x or need_w):
            return grad_x, grad_w, None
        rows = max(hi - lo for lo, hi, _ in chunks)
        d_rows = grad_out.new_empty(rows, grad_out.shape[1])  # dY[dst], shared by dX and dW
        x_rows = x.new_empty(rows, x.shape[1])  # X[src] for dW, then dY[dst] W^T for dX
        for lo, hi, segs in chunks:
            n = hi - lo
            torch.index_select(grad_out, 0, pairs.dst[lo:hi], out=d_rows[:n])
            if need_w:
                torch.index_select(x, 0, pairs.src[lo:hi], out=x_rows[:n])
                for k, a, b in segs:
                    torch.mm(x_rows[a:b].t(), d_rows[a:b], out=grad_w[k])
            if need_x:
                for k, a, b in segs:
                    torch.mm(d_rows[a:b], weight[k].t(), out=x_rows[a:b])
                _scatter_rows(grad_x, pairs.src[lo:hi], x_rows[:n])
        return grad_x, grad_w, None
