"""Multi-process training through PyTorch's own engine: `torchrun --nproc_per_node N -m kidneyseg train ...`.

`torchrun` sets RANK, WORLD_SIZE and LOCAL_RANK; `init_distributed` joins the process group
(NCCL on CUDA, gloo on CPU) and picks each rank's device. Only rank 0 writes files; metrics are
summed across ranks with `all_reduce_sum`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from kidneyseg.device import pick_device
from kidneyseg.errors import KidneysegError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _environment_int(name: str, default: str | None = None) -> int:
    """A whole number that torchrun puts in the environment; one line if it is missing or wrong."""
    raw = os.environ.get(name, default)
    if raw is None:
        raise KidneysegError(
            f"environment variable {name} is not set, but WORLD_SIZE asks for a multi-process run: "
            "start it with torchrun, or unset WORLD_SIZE"
        )
    try:
        return int(raw)
    except ValueError:
        raise KidneysegError(f"environment variable {name}={raw!r} must be a whole number") from None


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun; a single-process context otherwise."""
    world = _environment_int("WORLD_SIZE", "1")
    if world <= 1:
        return DistContext(device=pick_device(device))
    rank = _environment_int("RANK")
    local_rank = _environment_int("LOCAL_RANK", "0")
    dev = pick_device(device, local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistContext(rank=rank, world=world, local_rank=local_rank, device=dev)


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """`values` summed over all ranks (unchanged in a single process)."""
    if ctx.distributed:
        out = values.detach().to(ctx.device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(values.device)
    return values


def all_true(flag: bool, ctx: DistContext) -> bool:
    """True if `flag` holds on every rank."""
    if not ctx.distributed:
        return flag
    return bool(all_reduce_sum(torch.tensor([0.0 if flag else 1.0]), ctx).item() == 0)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
