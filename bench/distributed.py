"""Distributed helpers: the trainer under ``torchrun`` (DistributedDataParallel; NCCL on GPUs, gloo on CPUs).

``torchrun --nproc_per_node N -m bench.run ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`init` then joins the process group. Without those variables everything is a single process (rank 0 of
1) and every helper is a no-op, so the same code runs with and without ``torchrun``.

Failures under ``torchrun``: for any non-zero exit of a worker, ``torchrun`` raises its own ``ChildFailedError``
(Python prints a traceback of the launcher's frames) and prints a failure summary per rank; a worker cannot
prevent that without hiding the failure from the exit status. :func:`record_error` writes the worker's message
to the error file ``torchrun`` reads, so the summary names the error instead of ``<N/A>`` and a link.
"""

from __future__ import annotations

import json
import os
import time

import torch
import torch.distributed as dist


def launched() -> bool:
    """True when the process was started by ``torchrun`` (``WORLD_SIZE`` set)."""
    return "WORLD_SIZE" in os.environ


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by ``torchrun`` and return this rank's device.

    CUDA devices get the NCCL backend and ``cuda:LOCAL_RANK``; CPUs get gloo.
    """
    if not launched() or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return device


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, the only rank that writes files."""
    return rank() == 0


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over all ranks (``x`` itself in a single process); returns a new tensor."""
    if not active():
        return x.clone()
    work = x.cuda() if dist.get_backend() == "nccl" else x.clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(x.device)


def all_gather_objects(obj: object) -> list[object]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if not active():
        return [obj]
    out: list[object] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (``obj`` itself in a single process)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _AllGather(torch.autograd.Function):
    """Every rank's ``x`` (equal shapes) stacked in rank order, ``(world, *x.shape)``, with a gradient.

    Forward: ``all_gather``. Backward: the gradient of the stacked tensor is summed over the ranks
    (``all_reduce``) and this rank keeps its own slice, so rank ``r``'s ``x`` receives the sum over all ranks of
    the gradient reaching part ``r``; one code path for gloo and NCCL. Every rank must run the backward (as it
    runs the forward): both are collectives.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[rank()]


def all_gather_rows(x: torch.Tensor, differentiable: bool = False) -> list[torch.Tensor]:
    """Every rank's ``x`` (same trailing shape, any number of rows), in rank order; ``[x]`` in a single process.

    Rows are padded to the largest count for the collective and trimmed after. With ``differentiable=True`` the
    gather keeps the autograd graph (:class:`_AllGather`): the gradient reaching rank ``r``'s part on any rank
    flows back to rank ``r``'s ``x`` (summed over ranks).
    """
    if not active():
        return [x]
    sizes = [int(n) for n in all_gather_objects(int(x.shape[0]))]
    padded = torch.cat([x, x.new_zeros((max(sizes) - x.shape[0], *x.shape[1:]))]) if x.shape[0] < max(sizes) else x
    if differentiable:
        parts = list(_AllGather.apply(padded).unbind(0))
    else:
        parts = [torch.empty_like(padded) for _ in range(world_size())]
        dist.all_gather(parts, padded.contiguous())
    return [part[:n] for part, n in zip(parts, sizes, strict=True)]


def gather_slots(x: torch.Tensor, lengths: list[int], differentiable: bool = False) -> torch.Tensor:
    """Rows of every rank in the order of the global batch, on every rank (``x`` itself in a single process).

    Rank ``r`` holds the scans ``r, r + W, ...`` of a batch (the training samplers' sharding); ``x`` is its rows
    for them, scan after scan, ``lengths[i]`` rows for its ``i``-th scan. The result is the rows of scan 0, 1,
    2, ... of the whole batch, as one process would have them (gradients flow back as in :func:`all_gather_rows`).
    """
    if not active():
        return x
    world = world_size()
    parts = all_gather_rows(x, differentiable)
    all_lengths = all_gather_objects(list(lengths))
    pieces = {}
    for r, (part, lens) in enumerate(zip(parts, all_lengths, strict=True)):
        for i, piece in enumerate(part.split(list(lens))):
            pieces[r + world * i] = piece
    return torch.cat([pieces[g] for g in sorted(pieces)])


def record_error(message: str, replace: bool = True) -> bool:
    """Write ``message`` to this process's torchelastic error file; True if written.

    ``torchrun`` gives every worker a file of its own (``TORCHELASTIC_ERROR_FILE``) and prints it in the failure
    summary that it shows, with its own ``ChildFailedError`` traceback, for every non-zero exit of a worker: with
    the file the summary's ``traceback`` line is this message instead of a pointer to torchrun's documentation.
    The format is the one of torchelastic's ``ErrorHandler`` (``{"message": {"message", "extraInfo":
    {"timestamp"}}}``) without a Python call stack. ``replace=False`` keeps a file already written (an earlier,
    more precise error). Without ``torchrun`` (no variable) nothing is written.
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or (not replace and os.path.exists(path)):
        return False
    data = {"message": {"message": message, "extraInfo": {"timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w") as handle:
            json.dump(data, handle)
    except OSError:
        return False
    return True


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
