"""Robustness curves over several processes: one shard per rank, counts merged exactly.

Under ``torchrun`` (or ``srun``) every rank calls :func:`sharded_robustness_curve` with the same
arguments. The points to evaluate (the test split, or its class-stratified sample under
``limit``, drawn on every rank from the same seed) are cut into chunks of ``batch_size``
consecutive points exactly as :func:`~fastrobust.evaluation.curve.robustness_curve` cuts them
in one process, and rank ``r`` takes a contiguous block of whole chunks (:func:`plan_shards`;
rank 0 the first). No point is padded or repeated; a rank left without a chunk (more ranks
than chunks) evaluates nothing and only joins the merge.

A chunk's random starts and Square's windows are keyed by the chunk's index in the *whole* set
(:attr:`~fastrobust.evaluation.curve.CurveRun.first_chunk`), and every chunk holds the same points as in one process. So each point is
attacked from the same starts, in the same batch, as in a one-process run with the same
``batch_size`` and ``seed``: the merged curve is that run's curve, whatever the number of
processes (bit for bit on CPUs with the same thread count; GPU kernels that are not
deterministic can move the last bits, as they do between two one-process runs). Counts
(``n``, clean-correct, robust per eps, fooled-first-by per eps and attack, attack gradients)
are sums over the shards; the per-point mask is their concatenation.

The gradient-masking checks run once, on rank 0, over rank 0's shard (the others skip them);
they equal the one-process checks when rank 0 holds every point, and say so in a note
otherwise. ``time_s`` is the slowest shard's; ``shards`` records every rank's share.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch
import torch.distributed as dist

from fastrobust import distributed
from fastrobust.attacks.contract import Model
from fastrobust.attacks.threat import ThreatModel
from fastrobust.data.disk_loader import WORKERS, head
from fastrobust.data.imagefolder import LazyImages
from fastrobust.distributed import gather_together
from fastrobust.errors import ConfigError
from fastrobust.evaluation.curve import CurveRun, curve_for_run
from fastrobust.evaluation.inputs import Data, data_tensors
from fastrobust.evaluation.results import RobustnessCurve
from fastrobust.evaluation.settings import CurveSettings
from fastrobust.model_info import check_model_fits

log = logging.getLogger(__name__)

#: what every shard must have been evaluated with for the merge to mean anything
_SAME = (
    "norm",
    "eps",
    "attacks",
    "steps",
    "restarts",
    "step_size_factor",
    "random_start",
    "seed",
    "version",
    "budgets",
)


@dataclass(frozen=True)
class Shard:
    """The points ``start..stop`` (chunks ``first_chunk`` onwards) that one rank evaluates."""

    rank: int
    start: int
    stop: int
    first_chunk: int
    chunks: int

    @property
    def n(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def plan_shards(n: int, batch_size: int, world_size: int) -> list[Shard]:
    """Split ``n`` points, in chunks of ``batch_size``, into ``world_size`` contiguous blocks of
    whole chunks as even as they come (rank 0 first; ranks beyond the chunk count get none)."""
    if n < 0 or batch_size < 1 or world_size < 1:
        raise ConfigError(
            f"need n >= 0, batch_size >= 1 and world_size >= 1, got {n}, {batch_size}, {world_size}"
        )
    chunks = -(-n // batch_size)
    edges = [-(-r * chunks // world_size) for r in range(world_size + 1)]
    return [
        Shard(r, min(a * batch_size, n), min(b * batch_size, n), a, b - a)
        for r, (a, b) in enumerate(zip(edges, edges[1:]))
    ]


def merge_curves(
    parts: Sequence[RobustnessCurve], *, data: dict[str, Any] | None = None
) -> RobustnessCurve:
    """One curve from the curves of consecutive, disjoint shards of the points, in order.

    Counts add up and the per-point masks are concatenated; the checks, model description and
    check time are the first shard's, ``time_s`` the slowest shard's. ``data`` describes the
    whole set (default: the first shard's description with the summed ``n``). A shard
    evaluated with other settings (eps, attacks, budgets, seed, ...) is a ConfigError.
    """
    if not parts:
        raise ConfigError("no shard to merge")
    first = parts[0]
    for name in _SAME:
        values = [getattr(p, name) for p in parts]
        if any(v != values[0] for v in values[1:]):
            raise ConfigError(
                f"the shards were evaluated with different {name} ({values[0]!r} and "
                f"{next(v for v in values if v != values[0])!r}): every rank must get the "
                "same arguments"
            )
    n = sum(p.n for p in parts)
    fooled_by = []
    for j in range(len(first.eps)):
        keys = list(dict.fromkeys(k for p in parts for k in p.fooled_by[j]))
        fooled_by.append({k: sum(p.fooled_by[j].get(k, 0) for p in parts) for k in keys})
    return dataclasses.replace(
        first,
        n=n,
        clean_correct=sum(p.clean_correct for p in parts),
        robust=[sum(p.robust[j] for p in parts) for j in range(len(first.eps))],
        fooled_by=fooled_by,
        robust_mask=torch.cat([p.robust_mask for p in parts], 1),
        data=dict(data) if data is not None else {**first.data, "n": n},
        attack_gradients=sum(p.attack_gradients for p in parts),
        time_s=max(p.time_s for p in parts),
        checks=list(first.checks),
        notes=list(dict.fromkeys(note for p in parts for note in p.notes)),
    )


def _check_group(world: distributed.WorldInfo) -> None:
    """A world of several ranks needs the process group up (and to agree with it)."""
    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError(
            f"this process is rank {world.rank} of {world.world_size} (RANK/WORLD_SIZE) but no "
            "process group is up: call fastrobust.distributed.init_distributed first"
        )
    if (dist.get_rank(), dist.get_world_size()) != (world.rank, world.world_size):
        raise ConfigError(
            f"the process group is rank {dist.get_rank()} of {dist.get_world_size()}, the "
            f"world given is rank {world.rank} of {world.world_size}"
        )


@overload
def _take(x: torch.Tensor, shard: Shard) -> torch.Tensor: ...
@overload
def _take(x: LazyImages, shard: Shard) -> LazyImages: ...
def _take(x: torch.Tensor | LazyImages, shard: Shard) -> torch.Tensor | LazyImages:
    """Points ``start..stop`` of ``x``; images on disk stay on disk until evaluated."""
    if isinstance(x, LazyImages):
        return x.take(range(shard.start, shard.stop))
    return x[shard.start : shard.stop]


def sharded_robustness_curve(
    model: Model,
    data: Data,
    threat_name: str | ThreatModel,
    eps_list: Sequence[float],
    settings: CurveSettings | None = None,
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
    world: distributed.WorldInfo | None = None,
    workers: int = WORKERS,
) -> RobustnessCurve:
    """:func:`~fastrobust.evaluation.curve.robustness_curve` with the points shared out over
    the ranks of the job; every rank must call it, and every rank gets the merged curve.

    ``world`` defaults to :func:`fastrobust.distributed.world_info_from_env`; in one process
    this is ``robustness_curve`` itself. With several ranks the process group must be up
    (:func:`fastrobust.distributed.init_distributed`). The merged curve equals the
    one-process curve with the same ``settings.batch_size`` and ``settings.seed``, apart from
    the times and the checks (rank 0's shard; see the module docstring); ``shards`` records
    which rank took which points. ``workers``: as for ``robustness_curve``.
    """
    run = CurveRun(device=device, progress=progress, workers=workers)
    return sharded_curve_for_run(
        model, data, threat_name, eps_list, settings or CurveSettings(), run, world
    )


def sharded_curve_for_run(
    model: Model,
    data: Data,
    threat_name: str | ThreatModel,
    eps_list: Sequence[float],
    settings: CurveSettings,
    run: CurveRun,
    world: distributed.WorldInfo | None = None,
) -> RobustnessCurve:
    """:func:`sharded_robustness_curve` with the run's internals (the caption) given."""
    world = distributed.world_info_from_env() if world is None else world
    if not world.distributed:
        return curve_for_run(model, data, threat_name, eps_list, settings, run)
    _check_group(world)
    batch_size = settings.batch_size

    def work() -> tuple[RobustnessCurve | None, list[Shard], dict[str, Any]]:
        x_all, y_all, info = data_tensors(data, settings.limit, settings.seed)
        classes = info.pop("classes")
        # a shard travels as plain tensors: the class names are checked here, on the whole set
        check_model_fits(model, head(x_all, 2, workers=run.workers), y_all, classes=classes)
        shards = plan_shards(len(y_all), batch_size, world.world_size)
        mine = shards[world.rank]
        if mine.n == 0:
            return None, shards, info
        # the shard is the whole data of its curve: no second sample is drawn from it
        own = dataclasses.replace(
            settings.curve_only(), limit=None, checks=settings.checks and world.is_main
        )
        here = dataclasses.replace(
            run, first_chunk=mine.first_chunk, progress=run.progress and world.is_main
        )
        points = (_take(x_all, mine), y_all[mine.start : mine.stop])
        return curve_for_run(model, points, threat_name, eps_list, own, here), shards, info

    results = gather_together(work, world)
    _, shards, info = results[0]
    parts = [part for part, _, _ in results if part is not None]
    curve = merge_curves(parts, data=info)
    times = [part.time_s if part is not None else 0.0 for part, _, _ in results]
    curve.shards = [{**s.to_dict(), "time_s": round(t, 3)} for s, t in zip(shards, times)]
    zero, idle = shards[0], sum(s.n == 0 for s in shards)
    if settings.checks and zero.n < curve.n:
        curve.notes.append(
            f"gradient-masking checks ran on rank 0's shard only: points {zero.start}-"
            f"{zero.stop - 1} of {curve.n}"
        )
    if idle:
        curve.notes.append(
            f"{idle} of {world.world_size} processes had no points to evaluate ({curve.n} points "
            f"are {sum(s.chunks for s in shards)} chunks of batch_size {batch_size}); a smaller "
            "batch_size spreads them wider (and changes which random starts the points get)"
        )
    if world.is_main:
        log.info(
            "%s: %d points on %d processes (%s)",
            run.label,
            curve.n,
            world.world_size,
            ", ".join(f"rank {s.rank}: {s.n}" for s in shards),
        )
    return curve
