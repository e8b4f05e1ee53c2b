"""Several processes under torchrun: the process group, barriers, DDP wrapping, broadcasts.

Every function is a no-op (or returns the model unwrapped) for one process, so the trainer
calls them unconditionally. ``torch.distributed`` is imported only when there is more than
one process.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from distill.train.student import Student

__all__ = ["barrier", "broadcast_flag", "broadcast_state", "dist_env", "init_group", "wrap_ddp"]


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def init_group(world: int) -> bool:
    """Initialise the process group under torchrun; True when this call created it."""
    import torch.distributed as dist

    if world <= 1 or dist.is_initialized():
        return False
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True


def barrier(world: int) -> None:
    """Wait for every rank (nothing to wait for with one process)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def wrap_ddp(student: Student, world: int, local_rank: int, device: torch.device) -> nn.Module:
    """The module a training step calls: ``student`` itself, or DDP around it (world > 1)."""
    if world <= 1:
        return student
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        student, device_ids=[local_rank] if device.type == "cuda" else None
    )


def broadcast_state(student: Student, world: int) -> None:
    """Give every rank rank 0's weights (after rank 0 picked the stage's final weights)."""
    if world <= 1:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(student.state_dict().values()):
            dist.broadcast(t, src=0)


def broadcast_flag(flag: bool, world: int) -> bool:
    """Rank 0's ``flag`` on every rank (``flag`` itself with one process)."""
    if world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())
