"""torch.distributed, used only when a process group exists (``torchrun``); one process works the same without.

Data parallelism for the search: every rank draws the same global noise set from the seed, takes its own slice
of each global batch, and the solver's gradients are averaged across ranks, so every rank holds the same solver.
Rank 0 alone writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment; no-op without it."""
    if active() or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return active()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


def average_gradients(params) -> None:
    if not active():
        return
    n = world()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= n


def sum_scalars(*values: float) -> list[float]:
    """Sum floats over ranks (float64)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def barrier() -> None:
    if active():
        dist.barrier()


def my_slice(n: int) -> slice:
    """This rank's contiguous part of ``n`` items (the parts of all ranks tile ``range(n)``)."""
    r, w = rank(), world()
    lo, hi = (n * r) // w, (n * (r + 1)) // w
    return slice(lo, hi)
