"""Autograd functions of the pure-PyTorch sparse convolutions (hand-written forward and backward).

Every product is one dense GEMM on a gathered matrix (the "fused gather" of all kernel offsets at once):

- submanifold (``T`` the (M, K) neighbour table, sentinel = zero row):
  ``Y = G W``, ``G = X[T]`` reshaped (M, K*Cin), ``W`` reshaped (K*Cin, Cout);
  ``dX = dY[T] W_flip^T`` with ``W_flip[k] = W[K-1-k]`` -- for kernels symmetric about 0, ``T[i, k] = j`` iff
  ``T[j, K-1-k] = i``, so the transposed scatter is again a gather of the same table, with no atomic adds
  (deterministic); ``dW = G^T dY``.
- strided, kernel 2 stride 2 (``C`` the (Mc, 8) child table, ``parent``/``slot`` per fine row):
  ``Y = X[C] W``; ``dX = (dY W_stack^T)[8 * parent + slot]``; ``dW = X[C]^T dY``.
- transposed, kernel 2 stride 2, its adjoint:
  ``Y = (X W_stack)[8 * parent + slot]``; ``dX = dY[C] W_stack^T``; ``dW = X^T dY[C]``.

``W`` has layout (K, Cin, Cout), ``W_stack`` is ``W`` as (Cin, 8*Cout) or its transposes.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def gather_rows(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``x`` rows at ``table`` (R, K) as one (R, K*C) matrix; index ``len(x)`` reads a zero row."""
    padded = torch.cat([x, x.new_zeros(1, x.shape[1])], dim=0)
    return padded.index_select(0, table.reshape(-1)).view(table.shape[0], table.shape[1] * x.shape[1])


class SubmanifoldConvFunction(torch.autograd.Function):
    """``Y = X[T] W`` on the sites of ``X`` (see module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, table: torch.Tensor):
        ctx.save_for_backward(x, weight, table)
        k, c_in, c_out = weight.shape
        return gather_rows(x, table) @ weight.reshape(k * c_in, c_out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, table = ctx.saved_tensors
        k, c_in, c_out = weight.shape
        grad_out = grad_out.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            w_flip = weight.flip(0).transpose(1, 2).reshape(k * c_out, c_in)
            grad_x = gather_rows(grad_out, table) @ w_flip
        if ctx.needs_input_grad[1]:
            grad_w = (gather_rows(x, table).t() @ grad_out).view(k, c_in, c_out)
        return grad_x, grad_w, None


class DownConvFunction(torch.autograd.Function):
    """Kernel-2 stride-2 convolution ``Y = X[C] W`` onto the coarse sites."""

    @staticmethod
    def forward(ctx, x, weight, children, flat_slot):
        ctx.save_for_backward(x, weight, children, flat_slot)
        k, c_in, c_out = weight.shape
        return gather_rows(x, children) @ weight.reshape(k * c_in, c_out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, children, flat_slot = ctx.saved_tensors
        k, c_in, c_out = weight.shape
        grad_out = grad_out.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            w_stack = weight.permute(2, 0, 1).reshape(c_out, k * c_in)
            grad_x = (grad_out @ w_stack).view(-1, c_in).index_select(0, flat_slot)
        if ctx.needs_input_grad[1]:
            grad_w = (gather_rows(x, children).t() @ grad_out).view(k, c_in, c_out)
        return grad_x, grad_w, None, None


class UpConvFunction(torch.autograd.Function):
    """Kernel-2 stride-2 transposed convolution ``Y = (X W_stack)[8 * parent + slot]`` onto the fine sites."""

    @staticmethod
    def forward(ctx, x, weight, children, flat_slot):
        ctx.save_for_backward(x, weight, children, flat_slot)
        k, c_in, c_out = weight.shape
        w_stack = weight.permute(1, 0, 2).reshape(c_in, k * c_out)
        return (x @ w_stack).view(-1, c_out).index_select(0, flat_slot)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, children, flat_slot = ctx.saved_tensors
        k, c_in, c_out = weight.shape
        gathered = gather_rows(grad_out.contiguous(), children)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = gathered @ weight.transpose(1, 2).reshape(k * c_out, c_in)
        if ctx.needs_input_grad[1]:
            grad_w = (x.t() @ gathered).view(c_in, k, c_out).transpose(0, 1).contiguous()
        return grad_x, grad_w, None, None
