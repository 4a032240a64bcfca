"""Process-group setup from torchrun or SLURM variables, and small collective helpers."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorldInfo:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_info_from_env(env: dict[str, str] | None = None) -> WorldInfo:
    """Rank and world size from torchrun (RANK, LOCAL_RANK, WORLD_SIZE) or SLURM (srun)."""
    env = dict(os.environ) if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        return WorldInfo(
            rank=int(env["RANK"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            world_size=int(env["WORLD_SIZE"]),
        )
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        return WorldInfo(
            rank=int(env["SLURM_PROCID"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            world_size=int(env["SLURM_NTASKS"]),
        )
    return WorldInfo()


def init_distributed(world: WorldInfo, device: torch.device) -> None:
    """Start the process group (NCCL on GPUs, gloo on CPU) when the job has several ranks."""
    if not world.distributed or dist.is_initialized():
        return
    if "MASTER_ADDR" not in os.environ:
        # srun without torchrun: the first node of the allocation hosts the rendezvous
        nodes = os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1").split(",")[0]
        os.environ["MASTER_ADDR"] = nodes.split("[")[0]
        os.environ.setdefault("MASTER_PORT", "29500")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.world_size)
    log.info("process group up: backend=%s rank=%d/%d", backend, world.rank, world.world_size)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor across ranks (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from ``src`` to every rank (internal use, trusted data)."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj
