"""A run's checkpoints: the weights record (``best.pt``, and inside ``last.pt``), ``last.pt``
with the whole resumable state, and restoring that state on resume (weights, optimiser,
schedule, scaler, monitor, training method and every rank's random generators)."""

from __future__ import annotations

import logging
from typing import Any, cast

import torch

from fastrobust import distributed
from fastrobust.checkpoint import load_weights
from fastrobust.errors import CheckpointError
from fastrobust.training.build import Parts
from fastrobust.training.preflight import Plan
from fastrobust.training.run_folder import RunFolder
from fastrobust.training.state import TrainState, weights_record

log = logging.getLogger(__name__)


class Checkpointing:
    """Writes a run's checkpoints into its folder."""

    def __init__(self, plan: Plan, parts: Parts, folder: RunFolder) -> None:
        self.plan, self.parts, self.folder = plan, parts, folder

    def weights(self, epoch: int, metrics: dict[str, Any] | None) -> dict[str, Any]:
        """The weights record of the model after ``epoch`` epochs (``best.pt``)."""
        return weights_record(
            self.parts.model,
            model_spec=self.parts.spec.to_dict(),
            classes=self.plan.data.classes,
            config=self.plan.cfg.to_flat_dict(),
            epoch=epoch,
            metrics=metrics,
            average=self.parts.average.module if self.parts.average is not None else None,
        )

    def save_last(self, state: TrainState, metrics: dict[str, Any] | None) -> None:
        """``last.pt``: the weights record and everything a resume needs, from every rank."""
        parts = self.parts
        state.optimizer = parts.optimizer.state_dict()
        state.scheduler = parts.scheduler.state_dict()
        state.scaler = parts.scaler.state_dict()
        state.monitor = parts.monitor.state_dict()
        device = self.plan.device
        rng = {"cpu": torch.get_rng_state()}  # this rank's generators (its own GPU only)
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        rng_ranks = distributed.all_gather_object(rng)
        state.rng_ranks = cast(list[dict[str, torch.Tensor]], rng_ranks)
        method_ranks = distributed.all_gather_object(parts.method.state_dict())
        state.method_ranks = cast(list[dict[str, Any]], method_ranks)
        record = {**self.weights(state.epoch, metrics), **state.to_checkpoint()}
        if parts.average is not None:
            record["ema_updates"] = parts.average.updates
        self.folder.save(self.folder.last_pt, record)


def restore(plan: Plan, parts: Parts, checkpoint: dict[str, Any]) -> TrainState:
    """Load a ``last.pt`` into the built parts and return its :class:`TrainState`; this rank's
    random generators continue where they stopped (rank 0's stream, reseeded per rank, when
    the number of processes changed)."""
    state = TrainState.from_checkpoint(checkpoint, best_metric=parts.method.best_metric)
    try:
        recorded = checkpoint.get("model_spec", {}).get("name", "model")
        load_weights(parts.model, checkpoint["model"], recorded=recorded, asked=parts.spec.name)
        parts.optimizer.load_state_dict(state.optimizer)
        parts.scheduler.load_state_dict(state.scheduler)
        parts.scaler.load_state_dict(state.scaler)
        if parts.average is not None:
            parts.average.load_state_dict(checkpoint["ema_model"], int(checkpoint["ema_updates"]))
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"checkpoint cannot be resumed ({exc})") from None
    parts.monitor.load_state_dict(state.monitor)
    world, rngs = plan.world, state.rng_ranks
    same_world = len(rngs) == world.world_size
    if not same_world and world.distributed and world.is_main:
        log.warning(
            "checkpoint saved by %d process(es), resumed on %d: random starts will "
            "differ from an uninterrupted run",
            len(rngs),
            world.world_size,
        )
    mine = rngs[world.rank] if same_world else rngs[0]
    methods = state.method_ranks
    if methods:  # what the training method carried (free's perturbation, curriculum's stage)
        parts.method.load_state_dict(methods[world.rank] if same_world else methods[0])
    torch.set_rng_state(mine["cpu"])
    if plan.device.type == "cuda" and "cuda" in mine:
        torch.cuda.set_rng_state(mine["cuda"], plan.device)
    if world.rank > 0 and not same_world:  # rank 0's stream, reseeded per rank
        torch.manual_seed(plan.seeds.random_starts(world.rank, state.epoch))
    return state
