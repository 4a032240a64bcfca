"""Process groups from torchrun or SLURM variables, collective helpers, local launching.

Data-parallel training uses PyTorch's own engine (``torch.distributed`` +
``DistributedDataParallel``), as the paper did on 2 and 8 V100s (Goodwin et al., HPEC 2020):
``torchrun`` (or ``srun``) starts one process per device, each process finds its place in
the job with :func:`world_info_from_env`, and :func:`init_distributed` joins the group (NCCL on
GPUs, gloo on CPUs). :func:`launch_local` starts N local processes the same way from Python
(tests, benchmarks).
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import socket
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist

from fastrobust.errors import ConfigError, FastRobustError

log = logging.getLogger(__name__)

#: env var: seconds a collective may wait for a missing rank before failing (default 1800)
TIMEOUT_ENV = "FASTROBUST_DIST_TIMEOUT"
#: env var: seconds an object collective (results gathered, failures settled) may wait for a
#: rank still working (default 86400): sharded evaluation and the study gather whole chunks
#: whose attacks can outlast the tensor collectives' timeout (an AutoAttack chunk at 224 px)
OBJECT_TIMEOUT_ENV = "FASTROBUST_OBJECT_TIMEOUT"

_objects: Any = None
"""the gloo group object collectives use (None: the default group, or no group)"""


@dataclass(frozen=True)
class WorldInfo:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, logs and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_info_from_env(env: dict[str, str] | None = None) -> WorldInfo:
    """Rank and world size from torchrun (RANK, LOCAL_RANK, WORLD_SIZE) or ``srun``.

    torchrun's variables win (so ``srun torchrun ...`` works). Under ``srun`` the world size
    is ``SLURM_STEP_NUM_TASKS``, which only ``srun`` sets: a batch script run directly also has
    ``SLURM_NTASKS``/``SLURM_PROCID`` but is a single process, and must not wait for ranks that
    will never come.
    """
    env = dict(os.environ) if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        return WorldInfo(
            rank=int(env["RANK"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            world_size=int(env["WORLD_SIZE"]),
        )
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        return WorldInfo(
            rank=int(env["SLURM_PROCID"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            world_size=int(env["SLURM_STEP_NUM_TASKS"]),
        )
    return WorldInfo()


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-04,07],cpu1`` -> ``gpu03``."""
    entry, depth = "", 0
    for ch in nodelist.strip():
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            break
        entry += ch
    return re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(",")[0].split("-")[0], entry)


def _slurm_rendezvous(env: MutableMapping[str, str]) -> None:
    """MASTER_ADDR/PORT for ``srun`` without torchrun: rank 0 runs on the step's first node,
    the port is derived from the job id (so two jobs sharing a node do not collide)."""
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
    env.setdefault("MASTER_ADDR", first_host(nodes))
    job = env.get("SLURM_JOB_ID", "")
    env.setdefault("MASTER_PORT", str(20000 + int(job) % 20000) if job.isdigit() else "29500")


def resolve_device(
    name: str, local_rank: int = 0, *, env: MutableMapping[str, str] | None = None
) -> torch.device:
    """``auto`` -> the local GPU when there is one, else the CPU; a bare ``cuda`` -> this
    process's GPU (``local_rank``; the only visible one under ``srun --gpus-per-task=1``).

    Under torchrun every process of a node sees the same GPUs, and NCCL refuses two ranks on
    one GPU: more processes on the node (``LOCAL_WORLD_SIZE``) than visible GPUs is a
    ConfigError on *every* rank, before any rendezvous (rank 0 would otherwise wait for the
    others until the collective timeout). A CUDA device becomes the process's current device
    (``torch.cuda.set_device``), so ``--device cuda:1`` in one process also puts library
    kernels and ``torch.cuda`` calls without a device on GPU 1.
    """
    env = os.environ if env is None else env
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError("device cuda requested but no GPU is available")
    if device.index is None:
        device = torch.device("cuda", _local_gpu(local_rank, torch.cuda.device_count(), env))
    torch.cuda.set_device(device)
    return device


def _local_gpu(local_rank: int, visible: int, env: MutableMapping[str, str]) -> int:
    """The index of this process's GPU among the ``visible`` ones (see :func:`resolve_device`)."""
    torchrun = "LOCAL_RANK" in env and "RANK" in env and "WORLD_SIZE" in env
    processes = int(env.get("LOCAL_WORLD_SIZE", local_rank + 1)) if torchrun else local_rank + 1
    if torchrun and processes > visible:
        raise ConfigError(
            f"{processes} processes on this node but {visible} GPU(s) visible: each rank needs "
            f"its own GPU; start at most {visible} (torchrun --nproc_per_node {visible}), or "
            "under SLURM one task per GPU (srun --gpus-per-task=1)"
        )
    if visible == 1:  # srun --gpus-per-task=1: each task sees only its own GPU
        return 0
    if local_rank >= visible:
        raise ConfigError(
            f"local rank {local_rank} needs a GPU but only {visible} are visible; "
            "start one process per GPU (torchrun --nproc_per_node <GPUs>)"
        )
    return local_rank


def init_distributed(world: WorldInfo, device: torch.device) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPU) when the job has several ranks."""
    if not world.distributed or dist.is_initialized():
        return
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        _slurm_rendezvous(os.environ)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = _seconds(TIMEOUT_ENV, 1800)
    object_timeout = _seconds(OBJECT_TIMEOUT_ENV, 86400)
    kwargs: dict[str, Any] = {}
    if (
        device.type == "cuda"
        and "device_id" in inspect.signature(dist.init_process_group).parameters
    ):
        kwargs["device_id"] = device  # binds the rank to its GPU (barriers, eager NCCL setup)
    dist.init_process_group(
        backend=backend,
        rank=world.rank,
        world_size=world.world_size,
        timeout=timeout,
        **kwargs,
    )
    global _objects
    # pickled objects travel over gloo (host memory, no GPU copies) with their own long
    # timeout, so ranks done early can wait for the slowest without the NCCL watchdog
    _objects = dist.new_group(backend="gloo", timeout=object_timeout)
    log.info("process group up: backend=%s rank=%d/%d", backend, world.rank, world.world_size)


def _seconds(env_var: str, default: float) -> timedelta:
    try:
        return timedelta(seconds=float(os.environ.get(env_var, default)))
    except ValueError:
        raise ConfigError(f"{env_var} must be a number of seconds") from None


def shutdown_distributed() -> None:
    global _objects
    _objects = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor across ranks in place (a no-op in a single process)."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if _active():
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from ``src`` to every rank (internal use, trusted data)."""
    if _active():
        box = [obj]
        dist.broadcast_object_list(box, src=src, group=_objects)
        return box[0]
    return obj


def all_gather_object(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if _active():
        out: list[object] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj, group=_objects)
        return out
    return [obj]


# -- launching local processes (tests, benchmarks) ------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _local_worker(
    rank: int, fn: Callable[..., Any], nprocs: int, port: int, threads: int, args: tuple[Any, ...]
) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nprocs),
        LOCAL_WORLD_SIZE=str(nprocs),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        fn(*args)
    finally:
        shutdown_distributed()


def launch_local(
    fn: Callable[..., Any], nprocs: int, *args: Any, threads: int = 0, port: int | None = None
) -> None:
    """Run ``fn(*args)`` in ``nprocs`` fresh processes on this machine, as torchrun would.

    Each process gets torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR/PORT on a free port)
    and leaves its process group when ``fn`` returns. ``fn`` must be importable (module
    level). If one process fails, the others are stopped and the failure is re-raised here
    (``torch.multiprocessing.ProcessRaisedException`` with the child's traceback).
    """
    from torch.multiprocessing.spawn import start_processes

    port = free_port() if port is None else port
    start_processes(  # type: ignore[no-untyped-call]  # torch leaves start_processes unannotated
        _local_worker,
        args=(fn, nprocs, port, threads, args),
        nprocs=nprocs,
        join=True,
        start_method="spawn",
    )


# -- failing together: an error on any rank is raised on every rank ---------------------
T = TypeVar("T")


class RankFailed(FastRobustError):
    """Another rank failed (its rank and message are in the text).

    Raised on every rank that did not fail itself, and on the non-zero ranks whose own failure
    was a user error, which rank 0 then reports: so the job stops on every rank, and a command
    line prints the error once (rank 0) instead of once per rank.
    """

    def __init__(self, message: str, rank: int = -1) -> None:
        super().__init__(message)
        self.rank = rank


_EVERY_RANK = "_on_every_rank"
"""attribute :func:`_settle` sets on the error it raises (read by :func:`on_every_rank`)"""


@dataclass
class _Outcome:
    value: Any = None
    error: str | None = None
    user_error: bool = True
    """the error (if any) is a FastRobustError"""


def _settle(value: Any, own: Exception | None, world: WorldInfo, *, send: bool) -> list[Any]:
    """Tell every rank how this one did (and its ``value`` when ``send``); raise if any failed."""
    if own is None:
        outcome = _Outcome(value=value if send else None)
    elif isinstance(own, FastRobustError):
        outcome = _Outcome(error=str(own))
    else:
        outcome = _Outcome(error=f"{type(own).__name__}: {own}", user_error=False)
    outcomes = cast(list[_Outcome], all_gather_object(outcome))  # every rank sends an _Outcome
    failed = [(r, o.error) for r, o in enumerate(outcomes) if o.error is not None]
    if not failed:
        return [o.value for o in outcomes]
    everywhere = all(o.user_error for o in outcomes)
    if own is not None and (world.is_main or not isinstance(own, FastRobustError)):
        error: Exception = own
    else:
        rank, message = failed[0]
        error = RankFailed(f"rank {rank}: {message}", rank)
    setattr(error, _EVERY_RANK, everywhere)
    raise error


def on_every_rank(exc: BaseException) -> bool:
    """Whether ``exc`` came out of :func:`together` / :func:`gather_together` with every rank
    raising a user error at the same point (so they may, say, meet at a barrier before exiting;
    a rank with a bug is on its way out instead)."""
    return bool(getattr(exc, _EVERY_RANK, False))


def _attempt(work: Callable[[], T]) -> tuple[T | None, Exception | None]:
    try:
        return work(), None
    except Exception as exc:  # every rank must learn of it, or the others wait forever
        return None, exc


def together(work: Callable[[], T], world: WorldInfo) -> T:
    """``work()`` on every rank, returning this rank's result; a failure on any rank is raised
    on every rank, so none waits for a rank that stopped.

    A rank raises its own error if it is rank 0 or the error is not a user error (a bug keeps
    its traceback), and :class:`RankFailed` naming the first failed rank otherwise. In one
    process this is ``work()``.
    """
    if not world.distributed:
        return work()
    value, own = _attempt(work)
    _settle(value, own, world, send=False)
    return cast(T, value)  # _settle raised unless work() returned value


def gather_together(work: Callable[[], T], world: WorldInfo) -> list[T]:
    """:func:`together`, and every rank gets every rank's result (picklable), in rank order."""
    if not world.distributed:
        return [work()]
    value, own = _attempt(work)
    return _settle(value, own, world, send=True)
