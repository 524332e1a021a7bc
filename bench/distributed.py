"""Distributed helpers: the trainer under ``torchrun`` (DistributedDataParallel; NCCL on GPUs, gloo on CPUs).

``torchrun --nproc_per_node N -m bench.run ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`init` then joins the process group. Without those variables everything is a single process (rank 0 of
1) and every helper is a no-op, so the same code runs with and without ``torchrun``.
"""

from __future__ import annotations

import os

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


def all_gather_rows(x: torch.Tensor, differentiable: bool = False) -> list[torch.Tensor]:
    """Every rank's ``x`` (same trailing shape, any number of rows), in rank order; ``[x]`` in a single process.

    Rows are padded to the largest count for the collective and trimmed after. With ``differentiable=True`` the
    gather keeps the autograd graph (``torch.distributed.nn.functional.all_gather``): the gradient reaching
    rank ``r``'s part on any rank flows back to rank ``r``'s ``x`` (summed over ranks).
    """
    if not active():
        return [x]
    sizes = [int(n) for n in all_gather_objects(int(x.shape[0]))]
    padded = torch.cat([x, x.new_zeros((max(sizes) - x.shape[0], *x.shape[1:]))]) if x.shape[0] < max(sizes) else x
    if differentiable:
        from torch.distributed.nn.functional import all_gather

        parts = list(all_gather(padded))
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


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
