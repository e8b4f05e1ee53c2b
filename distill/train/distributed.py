"""Several processes under torchrun: the process group, barriers, DDP wrapping, broadcasts.

Every function is a no-op (or returns the model unwrapped) for one process, so the trainer
calls them unconditionally. ``torch.distributed`` is imported only when there is more than
one process.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
from torch import nn

from vlmclient.errors import ConfigurationError

if TYPE_CHECKING:  # the student module imports timm: seconds a rank needs only to train
    from distill.train.student import Student

__all__ = [
    "all_reduce_sum",
    "barrier",
    "broadcast_flag",
    "broadcast_state",
    "dist_env",
    "init_group",
    "wrap_ddp",
]


# what torch's env:// rendezvous reads beside WORLD_SIZE (torchrun sets them all)
_RENDEZVOUS = ("RANK", "MASTER_ADDR", "MASTER_PORT")


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment variables.

    ConfigurationError when they are not numbers, or when WORLD_SIZE > 1 comes without the
    others (an export left over, another launcher): torch's rendezvous or ``int()`` raised a
    traceback there."""
    values: dict[str, int] = {}
    for name, default in (("WORLD_SIZE", "1"), ("RANK", "0"), ("LOCAL_RANK", None)):
        text = os.environ.get(name, default if default is not None else str(values["RANK"]))
        try:
            values[name] = int(text)
        except ValueError:
            values[name] = -1
        if values[name] < (1 if name == "WORLD_SIZE" else 0):
            raise ConfigurationError(
                f"the environment's {name}={text!r} is not a {name.lower().replace('_', ' ')}: "
                "start several processes with torchrun, or unset it"
            )
    world = values["WORLD_SIZE"]
    missing = [n for n in _RENDEZVOUS if world > 1 and not os.environ.get(n)]
    if missing:
        raise ConfigurationError(
            f"the environment's WORLD_SIZE={world} is set without {', '.join(missing)}: start "
            "several processes with torchrun (torchrun --nproc_per_node N -m distill train "
            "...), or unset WORLD_SIZE for one process"
        )
    return values["RANK"], world, values["LOCAL_RANK"]


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


def all_reduce_sum(tensors: list[torch.Tensor], world: int) -> None:
    """Sum every tensor over the ranks, in place (nothing to sum with one process)."""
    if world <= 1:
        return
    import torch.distributed as dist

    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
