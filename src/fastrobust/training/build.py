"""Build a run from its :class:`~fastrobust.training.preflight.Plan`: the process group, the
model (seeded), the training method, the loader, the optimiser and schedule, the gradient
scaler, the DDP / compiled wrappers and the overfitting monitor, in the order that fixes every
random stream (the weights from the weights seed; on ranks > 0 the random starts from their
own seed before the method and the loader)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastrobust import distributed
from fastrobust.attacks.contract import InputGradientsOnly
from fastrobust.attacks.threat import ThreatModel
from fastrobust.data import DiskLoader, InMemoryLoader, make_loader
from fastrobust.data.disk_loader import head
from fastrobust.model_info import check_model_fits
from fastrobust.models import ModelSpec, NormalizedModel, build_model
from fastrobust.training.averaging import WeightAverage
from fastrobust.training.methods import TrainingMethod, build_method
from fastrobust.training.monitor import OverfittingMonitor
from fastrobust.training.optimisation import build_optimiser
from fastrobust.training.preflight import Plan
from fastrobust.training.setup import compile_static, wrap_for_training


@dataclass
class Parts:
    """What a run trains with: the model (``model``: unwrapped, what attacks and checkpoints
    see; ``train_model``: what the weight update goes through, DDP-wrapped or compiled;
    ``attack_model``: the model the training attack runs on), the method and its threat
    model, the loader, the optimiser, schedule and scaler, the overfitting monitor, and the
    weight average (None unless ``optimisation.weight_average`` is set)."""

    spec: ModelSpec
    model: nn.Module
    train_model: nn.Module
    attack_model: nn.Module
    method: TrainingMethod
    threat: ThreatModel
    loader: InMemoryLoader | DiskLoader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    monitor: OverfittingMonitor
    average: WeightAverage | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The weights validation and ``best.pt`` are judged by: the average when on."""
        return self.average.module if self.average is not None else self.model


def build(plan: Plan, *, net: nn.Module | None = None, import_factory: bool = False) -> Parts:
    """Join the process group and build the run's parts (``net``: the caller's network,
    normalisation added around it; ``import_factory``: a ``package.module:factory`` model
    name may be imported)."""
    cfg, data, world, device = plan.cfg, plan.data, plan.world, plan.device
    distributed.init_distributed(world, device)
    spec = ModelSpec(
        name=cfg.optimisation.model if net is None else f"<object {type(net).__name__}>",
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        mean=list(data.mean),
        std=list(data.std),
    )
    torch.manual_seed(plan.seeds.weights())
    model: nn.Module = (
        NormalizedModel(net, spec.mean, spec.std)
        if net is not None
        else build_model(spec, import_factory=import_factory)
    )
    model.to(device)
    probe = head(data.test_x, 2, workers=cfg.data.workers)
    check_model_fits(model, probe, classes=data.classes, what=f"{data.name} images")
    if cfg.runtime.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs
    if world.rank > 0:
        # every rank starts from the same weights, but draws its own random starts (rank 0
        # keeps the one-process stream); per-rank RNG states are saved for exact resumes
        torch.manual_seed(plan.seeds.random_starts(world.rank))
    method = build_method(cfg.attack)
    method.label_smoothing = cfg.optimisation.label_smoothing
    loader = _loader(plan)
    optimizer, scheduler = build_optimiser(model, cfg.optimisation, len(loader))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.runtime.amp == "fp16")
    runtime = cfg.runtime
    model, train_model = wrap_for_training(
        model, world, device, sync_bn=runtime.sync_bn, compile_model=runtime.compile
    )
    # compiled: the attack's backward graph must not compute the weight gradients as well
    attack_model = compile_static(InputGradientsOnly(model)) if runtime.compile else model
    monitor = OverfittingMonitor(
        model, armed=method.perturbs, keep_good_weights=cfg.evaluation.early_stop
    )
    tau = cfg.optimisation.weight_average
    average = WeightAverage(model, tau) if tau > 0 else None
    return Parts(
        spec, model, train_model, attack_model, method, cfg.threat(), loader, optimizer,
        scheduler, scaler, monitor, average,
    )  # fmt: skip


def _loader(plan: Plan) -> InMemoryLoader | DiskLoader:
    """This rank's shard of the training set, in batches of its share of the global batch."""
    cfg, world, data_cfg = plan.cfg, plan.world, plan.cfg.data
    return make_loader(
        plan.data,
        cfg.optimisation.batch_size // world.world_size,
        augment=data_cfg.augment,
        crop_padding=data_cfg.crop_padding,
        flip=data_cfg.flip,
        seed=cfg.runtime.seed,
        rank=world.rank,
        world_size=world.world_size,
        device=plan.device,
        workers=data_cfg.workers,
        color_jitter=data_cfg.color_jitter,
        lighting=data_cfg.lighting,
    )
