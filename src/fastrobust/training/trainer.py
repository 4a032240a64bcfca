"""The training engine: one ``fit`` for standard, fast and PGD adversarial training.

Per batch: the adversary perturbs the batch on the *unwrapped* model (input gradients only),
then the perturbed batch goes through the (possibly DDP-wrapped) model for the weight update
(Goodwin et al. 2020, Algorithm 1). Per epoch: catastrophic-overfitting check on a fixed
training batch, validation (clean + PGD) every ``eval_every`` epochs, metrics as JSON lines,
``last.pt`` (full resume state) and ``best.pt`` (highest adversarial validation accuracy),
and the wall-clock time, so time-to-last and time-to-best epoch are known (the paper's Table I).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrobust import distributed as D
from fastrobust.attacks.contract import pgd_step_size
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.threat import ThreatModel
from fastrobust.checkpoint import load_checkpoint, save_checkpoint
from fastrobust.data import ImageDataset, load_dataset, make_loader
from fastrobust.data.base import to_float
from fastrobust.errors import CheckpointError, ConfigError, TrainingDiverged
from fastrobust.model_info import check_model_fits
from fastrobust.models import ModelSpec, NormalizedModel, build_model
from fastrobust.training.config import TrainConfig
from fastrobust.training.methods import TrainingMethod, build_method
from fastrobust.training.step import autocast_context, training_step

log = logging.getLogger(__name__)

LOG_EVERY = 10  # batches between progress-bar updates (the only host syncs in the loop)
COLLAPSE_RATIO = 0.5  # PGD accuracy below this fraction of its best so far = collapse,
COLLAPSE_MIN_DROP = 0.2  # ... and at least this far below it (early epochs are noisy),
COLLAPSE_MIN_BEST = 0.2  # ... once the best is at least this


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reached and where it lives."""

    run_dir: Path
    epochs_done: int
    val_clean_acc: float | None = None
    val_adv_acc: float | None = None
    best_epoch: int | None = None
    best_metric: str = "val_adv_acc"
    """what picks the best epoch: val_adv_acc (val_clean_acc for standard training)"""
    best_value: float | None = None
    time_to_last_s: float = 0.0
    time_to_best_s: float | None = None
    interrupted: bool = False
    collapsed_at: int | None = None
    world_size: int = 1
    """number of data-parallel processes (GPUs) the run used"""
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        d.pop("history")
        return d


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local GPU when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device cuda requested but no GPU is available")
        if device.index is None:
            visible = torch.cuda.device_count()
            if visible == 1:  # srun --gpus-per-task=1: each task sees only its own GPU
                local_rank = 0
            elif local_rank >= visible:
                raise ConfigError(
                    f"local rank {local_rank} needs a GPU but only {visible} are visible; "
                    "start one process per GPU (torchrun --nproc_per_node <GPUs>)"
                )
            device = torch.device("cuda", local_rank)
    return device


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Learning-rate factor per optimiser step (step, onecycle or constant schedule)."""
    total = cfg.epochs * steps_per_epoch

    def factor(it: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "step":
            return cfg.lr_gamma ** ((it // steps_per_epoch) // cfg.lr_step_epochs)
        peak = max(1, int(cfg.warmup_fraction * total))
        if it < peak:
            return (it + 1) / peak
        return max(0.0, (total - it) / max(1, total - peak))

    return factor


def evaluate_split(
    model: nn.Module,
    x_uint8: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    batch_size: int,
    device: torch.device,
    world: D.WorldInfo,
) -> tuple[float, float]:
    """Clean and PGD accuracy on a split, sharded across ranks with exact counts."""
    idx = torch.arange(world.rank, len(y), world.world_size)
    counts = torch.zeros(3, device=device)
    alpha = pgd_step_size(threat.eps, steps)
    was_training = model.training
    model.eval()
    for start in range(0, len(idx), batch_size):
        b = idx[start : start + batch_size]
        xb, yb = to_float(x_uint8[b].to(device)), y[b].to(device)
        with torch.no_grad():
            counts[0] += (model(xb).argmax(1) == yb).sum()
        x_adv = pgd(model, xb, yb, threat, steps=steps, step_size=alpha)
        with torch.no_grad():
            counts[1] += (model(x_adv).argmax(1) == yb).sum()
        counts[2] += len(b)
    model.train(was_training)
    D.all_reduce_sum(counts)
    n = max(float(counts[2]), 1.0)
    return float(counts[0]) / n, float(counts[1]) / n


class Trainer:
    """Holds one run's state; ``fit()`` is the public entry point."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        net: nn.Module | None = None,
        dataset: ImageDataset | None = None,
        resume_state: dict[str, Any] | None = None,
        run_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.world = D.world_info_from_env()
        self.device = resolve_device(cfg.device, self.world.local_rank)
        self.data = (
            dataset
            if dataset is not None
            else load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size)
        )
        self._check_batch()  # before the rendezvous: a bad batch size fails at once everywhere
        D.init_distributed(self.world, self.device)
        self.spec = ModelSpec(
            name=cfg.model if net is None else f"<object {type(net).__name__}>",
            num_classes=self.data.num_classes,
            in_channels=self.data.in_channels,
            image_size=self.data.image_size,
            mean=list(self.data.mean),
            std=list(self.data.std),
        )
        torch.manual_seed(cfg.seed)
        self.model: NormalizedModel = (
            NormalizedModel(net, self.spec.mean, self.spec.std)
            if net is not None
            else build_model(self.spec)
        )
        self.model.to(self.device)
        self._check_model()
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.world.rank > 0:
            # every rank starts from the same weights, but draws its own random starts (rank 0
            # keeps the one-process stream); per-rank RNG states are saved for exact resumes
            torch.manual_seed(cfg.seed + 1_000_003 * self.world.rank)
        self.method: TrainingMethod = build_method(cfg.attack)
        self.threat = cfg.threat()
        per_rank = cfg.batch_size // self.world.world_size
        self.loader = make_loader(
            self.data,
            per_rank,
            augment=cfg.augment,
            seed=cfg.seed,
            rank=self.world.rank,
            world_size=self.world.world_size,
            device=self.device,
            workers=cfg.workers,
        )
        self.steps_per_epoch = len(self.loader)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg, self.steps_per_epoch)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.train_model: nn.Module = self._wrap_for_training()
        self.attack_model: nn.Module = torch.compile(self.model) if cfg.compile else self.model
        self.epoch = 0
        self.elapsed = 0.0
        self.best_adv: float = -1.0
        self.best_epoch: int | None = None
        self.time_to_best: float | None = None
        self.best_check: float = -1.0
        self.collapse_warned = False
        self.good_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []
        if resume_state is not None:
            self._load_resume_state(resume_state)
        self.run_dir = run_dir if run_dir is not None else self._new_run_dir()
        self.check_idx = self._overfit_check_indices()

    # -- setup checks ---------------------------------------------------------------------
    def _check_batch(self) -> None:
        n, w, b = len(self.data.train_y), self.world.world_size, self.cfg.batch_size
        if b > n:
            raise ConfigError(f"batch size {b} is larger than the training set ({n} images)")
        if b % w:
            raise ConfigError(f"global batch size {b} does not divide evenly over {w} processes")

    def _check_model(self) -> None:
        images = f"{self.data.name} images"
        check_model_fits(self.model, self.data.test_x[:2], classes=self.data.classes, what=images)

    def _wrap_for_training(self) -> nn.Module:
        model: nn.Module = self.model
        if self.world.distributed:
            if self.cfg.sync_bn:
                if self.device.type != "cuda":
                    raise ConfigError("--sync-bn needs GPUs (NCCL); drop it on CPU")
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
                model = self.model
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return torch.compile(model) if self.cfg.compile else model

    def _new_run_dir(self) -> Path:
        cfg = self.cfg
        name = cfg.name
        if name is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            model = cfg.model.split(":")[-1]
            name = f"{cfg.dataset}-{model}-{cfg.method}-{cfg.norm}-eps{cfg.eps:g}-{stamp}"
        name = str(D.broadcast_object(name))
        run_dir = Path(cfg.out_dir).expanduser() / name
        problem = None
        if self.world.is_main:
            if run_dir.exists() and any(run_dir.iterdir()):
                problem = (
                    f"run folder {run_dir} already exists; pick another --name or use --resume"
                )
            else:
                run_dir.mkdir(parents=True, exist_ok=True)
                cfg.write_yaml(run_dir / "config.yaml")
        problem = D.broadcast_object(problem)  # every rank stops, none waits for the others
        if problem is not None:
            raise ConfigError(str(problem))
        return run_dir

    def _overfit_check_indices(self) -> torch.Tensor:
        n = min(self.cfg.overfit_check_size, len(self.data.train_y))
        g = torch.Generator().manual_seed(self.cfg.seed + 12_345)
        return torch.randperm(len(self.data.train_y), generator=g)[:n]

    # -- checkpoint state -----------------------------------------------------------------
    def _base_state(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_spec": self.spec.to_dict(),
            "classes": list(self.data.classes),
            "config": self.cfg.to_flat_dict(),
            "epoch": self.epoch,
            "metrics": metrics or {},
        }

    def _rng_state(self) -> dict[str, torch.Tensor]:
        """This rank's generator states (the CUDA one of its own GPU only)."""
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        rngs = state.get("rng_ranks") or []
        if len(rngs) == self.world.world_size:
            mine = rngs[self.world.rank]
        else:  # saved by another number of processes: rank 0's stream, reseeded per rank
            mine = {"cpu": state["rng_cpu"]}
            if state["rng_cuda"]:
                mine["cuda"] = state["rng_cuda"][0]
            if self.world.distributed and self.world.is_main:
                log.warning(
                    "checkpoint saved by %d process(es), resumed on %d: random starts will "
                    "differ from an uninterrupted run",
                    max(len(rngs), 1),
                    self.world.world_size,
                )
        torch.set_rng_state(mine["cpu"])
        if self.device.type == "cuda" and "cuda" in mine:
            torch.cuda.set_rng_state(mine["cuda"], self.device)
        if self.world.rank > 0 and len(rngs) != self.world.world_size:
            torch.manual_seed(self.cfg.seed + 1_000_003 * self.world.rank + int(state["epoch"]))

    def _resume_state(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        state = self._base_state(metrics)
        rngs: list[dict[str, torch.Tensor]] = D.all_gather_object(self._rng_state())  # type: ignore[assignment]
        state.update(
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            rng_cpu=rngs[0]["cpu"],
            rng_cuda=[rngs[0]["cuda"]] if "cuda" in rngs[0] else [],
            rng_ranks=rngs,  # every rank's own random-start stream (DDP resumes exactly)
            elapsed=self.elapsed,
            best_adv=self.best_adv,
            best_epoch=self.best_epoch,
            time_to_best=self.time_to_best,
            best_check=self.best_check,
            good_state=self.good_state or {},
            history=self.history,
        )
        return state

    def _load_resume_state(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self._set_rng_state(state)
            self.epoch = int(state["epoch"])
            self.elapsed = float(state["elapsed"])
            self.best_adv = float(state["best_adv"])
            self.best_epoch = state["best_epoch"]
            self.time_to_best = state["time_to_best"]
            self.best_check = float(state["best_check"])
            self.good_state = state["good_state"] or None
            self.history = list(state["history"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint cannot be resumed ({exc})") from None

    def _save(self, name: str, state: dict[str, Any]) -> None:
        if self.world.is_main:
            save_checkpoint(self.run_dir / name, state)

    # -- one epoch --------------------------------------------------------------------------
    def _train_epoch(self) -> dict[str, float]:
        from tqdm.auto import tqdm

        cfg, device = self.cfg, self.device
        self.model.train()
        self.loader.set_epoch(self.epoch)
        sums = torch.zeros(3, device=device)  # loss * n, correct, n
        show = cfg.progress and self.world.is_main
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not show,
            leave=False,
            dynamic_ncols=True,
        )
        for i, (x, y) in enumerate(self.loader):
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss, out = training_step(
                self.train_model,
                self.attack_model,
                self.method,
                self.optimizer,
                x,
                y,
                scaler=self.scaler,
                autocast=autocast_context(cfg.amp, device),
            )
            self.scheduler.step()
            with torch.no_grad():
                sums[0] += loss.detach() * len(y)
                sums[1] += (out.argmax(1) == y).sum()
                sums[2] += len(y)
            bar.update(1)
            if (i + 1) % LOG_EVERY == 0 or i + 1 == self.steps_per_epoch:
                loss_avg, acc = (sums[:2] / sums[2]).tolist()
                if not math.isfinite(loss_avg):
                    bar.close()
                    raise TrainingDiverged(
                        f"loss became {loss_avg} in epoch {self.epoch + 1}; stopped, the last "
                        f"good checkpoint is {self.run_dir / 'last.pt'} (try a lower --lr)"
                    )
                bar.set_postfix(loss=f"{loss_avg:.3f}", acc=f"{acc:.3f}")
        bar.close()
        D.all_reduce_sum(sums)
        loss_avg, acc = (sums[:2] / sums[2]).tolist()
        if not math.isfinite(loss_avg):
            raise TrainingDiverged(
                f"loss became {loss_avg} in epoch {self.epoch + 1}; stopped, the last good "
                f"checkpoint is {self.run_dir / 'last.pt'} (try a lower --lr)"
            )
        return {"train_loss": loss_avg, "train_acc": acc}

    def _overfit_check(self) -> float | None:
        """PGD accuracy on the fixed training batch (catastrophic overfitting monitor)."""
        if len(self.check_idx) == 0:
            return None
        x = to_float(self.data.train_x[self.check_idx]).to(self.device)
        y = self.data.train_y[self.check_idx].to(self.device)
        steps = self.cfg.eval_steps
        step_size = pgd_step_size(self.threat.eps, steps)
        x_adv = pgd(self.model, x, y, self.threat, steps=steps, step_size=step_size)
        with torch.no_grad():
            self.model.eval()
            acc = float((self.model(x_adv).argmax(1) == y).float().mean())
            self.model.train()
        return acc

    def _validate(self) -> tuple[float, float]:
        x, y = self.data.test_x, self.data.test_y
        if self.cfg.eval_limit is not None:
            x, y = x[: self.cfg.eval_limit], y[: self.cfg.eval_limit]
        return evaluate_split(
            self.model,
            x,
            y,
            self.threat,
            steps=self.cfg.eval_steps,
            batch_size=max(self.cfg.batch_size, 256),
            device=self.device,
            world=self.world,
        )

    # -- the loop -----------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        result = TrainResult(run_dir=self.run_dir, epochs_done=self.epoch, history=self.history)
        if self.epoch == 0:
            self._save("last.pt", self._resume_state(None))  # resumable from the very start
        elif self.world.is_main:
            # metrics.jsonl is rebuilt from the checkpoint's history, so a stop between saving
            # last.pt and appending the epoch's line loses nothing
            lines = "".join(json.dumps(m) + "\n" for m in self.history)
            (self.run_dir / "metrics.jsonl").write_text(lines)
        log.info(
            "training %s on %s (%d train images) with %s; run folder %s",
            self.spec.name,
            self.data.name,
            len(self.data.train_y),
            self.method.describe(),
            self.run_dir,
        )
        start = time.perf_counter() - self.elapsed
        try:
            while self.epoch < cfg.epochs:
                t0 = time.perf_counter()
                metrics: dict[str, Any] = {
                    "epoch": self.epoch + 1,
                    "lr": self.scheduler.get_last_lr()[0],
                }
                metrics.update(self._train_epoch())
                self.epoch += 1
                metrics["train_time_s"] = time.perf_counter() - t0
                collapsed = self._after_epoch(metrics)
                self.elapsed = time.perf_counter() - start
                metrics["elapsed_s"] = self.elapsed
                self.history.append(metrics)
                self._record(metrics)
                if collapsed and cfg.early_stop:
                    result.collapsed_at = self.epoch
                    break
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning("interrupted; resume with: fastrobust train --resume %s", self.run_dir)
        result.epochs_done = self.epoch
        result.world_size = self.world.world_size
        result.time_to_last_s = self.elapsed
        result.best_epoch = self.best_epoch
        result.best_metric = self.method.best_metric
        result.best_value = self.best_adv if self.best_adv >= 0 else None
        result.time_to_best_s = self.time_to_best
        last_val = [h for h in self.history if "val_adv_acc" in h]
        if last_val:
            result.val_clean_acc = last_val[-1]["val_clean_acc"]
            result.val_adv_acc = last_val[-1]["val_adv_acc"]
        if self.world.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(result.to_dict(), indent=2))
        D.barrier()  # on every rank, fit() returns once the run folder is complete
        return result

    def _after_epoch(self, metrics: dict[str, Any]) -> bool:
        """Overfitting check and validation (with their own RNG stream); returns collapse."""
        cfg = self.cfg
        collapsed = False
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.seed * 7919 + self.epoch)
            check = self._overfit_check() if self.world.is_main else None
            if check is not None:
                metrics["overfit_check_pgd_acc"] = check
                if check > self.best_check:
                    self.best_check = check
                    if cfg.early_stop:
                        self.good_state = copy.deepcopy(self.model.state_dict())
                elif (
                    self.method.perturbs  # no attack in training: nothing to collapse
                    and self.best_check >= COLLAPSE_MIN_BEST
                    and check < COLLAPSE_RATIO * self.best_check
                    and self.best_check - check >= COLLAPSE_MIN_DROP
                ):
                    collapsed = True
                    metrics["catastrophic_overfitting"] = True
                    log_fn = log.warning if not self.collapse_warned or cfg.early_stop else log.info
                    self.collapse_warned = True
                    log_fn(
                        "catastrophic overfitting suspected at epoch %d: PGD accuracy on a fixed "
                        "training batch fell to %.3f (best %.3f)%s",
                        self.epoch,
                        check,
                        self.best_check,
                        "; restoring the last good weights" if cfg.early_stop else "",
                    )
            collapsed = bool(D.broadcast_object(collapsed))
            if collapsed and cfg.early_stop:
                state = (
                    D.broadcast_object(self.good_state)
                    if self.world.distributed
                    else self.good_state
                )
                if state:
                    self.model.load_state_dict(state)  # type: ignore[arg-type]
            if (
                self.epoch % cfg.eval_every == 0
                or self.epoch == cfg.epochs
                or (collapsed and cfg.early_stop)
            ):
                clean, adv = self._validate()
                metrics["val_clean_acc"] = clean
                metrics["val_adv_acc"] = adv
        return collapsed

    def _record(self, metrics: dict[str, Any]) -> None:
        # best = highest adversarial validation accuracy (clean accuracy for standard training,
        # whose adversarial accuracy is ~0 and would pick an untrained early epoch)
        key = self.method.best_metric
        score = metrics.get(key)
        if score is not None and score > self.best_adv:
            self.best_adv = score
            self.best_epoch = self.epoch
            self.time_to_best = self.elapsed
            self._save("best.pt", self._base_state(metrics))
        self._save("last.pt", self._resume_state(metrics))
        if self.world.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(metrics) + "\n")
            parts = [f"epoch {self.epoch}/{self.cfg.epochs}", f"loss {metrics['train_loss']:.4f}"]
            parts.append(f"train acc {metrics['train_acc']:.3f}")
            if "val_clean_acc" in metrics:
                parts.append(f"val clean {metrics['val_clean_acc']:.3f}")
                parts.append(f"val adv {metrics['val_adv_acc']:.3f}")
            if "overfit_check_pgd_acc" in metrics:
                parts.append(f"train-batch PGD {metrics['overfit_check_pgd_acc']:.3f}")
            parts.append(f"{metrics['elapsed_s']:.1f}s")
            log.info(" | ".join(parts))


def fit(
    cfg: TrainConfig,
    *,
    net: nn.Module | None = None,
    dataset: ImageDataset | None = None,
) -> TrainResult:
    """Train a model as ``cfg`` says; ``net`` replaces the registry model by any nn.Module
    mapping normalised images to logits (normalisation is added around it)."""
    return Trainer(cfg, net=net, dataset=dataset).fit()


#: config fields that may change on resume without changing the result
RESUME_OVERRIDES = ("data_dir", "device", "workers", "progress")


def resume(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    net: nn.Module | None = None,
    dataset: ImageDataset | None = None,
    **overrides: Any,
) -> TrainResult:
    """Continue a run from its ``last.pt`` exactly where it stopped (optionally more epochs);
    ``net``/``dataset`` as given to :func:`fit` when the run was started with them.

    Only settings that do not change the result may be overridden (:data:`RESUME_OVERRIDES`:
    where the data lives, the device, workers, the progress bar); anything else would make
    the resumed run differ from an uninterrupted one, so it is refused."""
    refused = sorted(k for k, v in overrides.items() if v is not None and k not in RESUME_OVERRIDES)
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)
        raise ConfigError(
            f"{flags} cannot change when resuming (the run continues with its recorded config); "
            "only --epochs and "
            + ", ".join("--" + k.replace("_", "-") for k in RESUME_OVERRIDES)
            + " may be given with --resume"
        )
    run_dir = Path(run_dir).expanduser()
    ckpt = run_dir / "last.pt" if run_dir.is_dir() else run_dir
    if ckpt.is_file() and not run_dir.is_dir():
        run_dir = ckpt.parent
    if not ckpt.is_file():
        raise CheckpointError(f"nothing to resume: {ckpt} does not exist")
    state = load_checkpoint(ckpt)
    if "optimizer" not in state:
        raise CheckpointError(f"{ckpt} holds weights only, not a resumable training state")
    data = dict(state["config"])
    if epochs is not None:
        data["epochs"] = epochs
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig.from_dict(data)
    if epochs is not None and run_dir.is_dir() and D.world_info_from_env().is_main:
        cfg.write_yaml(run_dir / "config.yaml")
    trainer = Trainer(cfg, net=net, dataset=dataset, resume_state=state, run_dir=run_dir)
    return trainer.fit()
