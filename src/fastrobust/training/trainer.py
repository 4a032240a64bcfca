"""The training loop: ``fit`` for every training method, ``resume`` to continue a run exactly.

Per batch (:mod:`~fastrobust.training.step`): the training method perturbs the batch on the
unwrapped model, the weight update goes through the (possibly DDP-wrapped) model (Goodwin et
al. 2020, Algorithm 1). Per epoch: the catastrophic-overfitting check on a fixed training
batch (:mod:`~fastrobust.training.monitor`) every ``overfit_check_every`` epochs, validation
(clean + PGD) every ``eval_every`` epochs (both resolved by
:func:`~fastrobust.training.validation.between_epoch_intervals`), one metrics row,
``last.pt`` (the :class:`~fastrobust.training.state.TrainState`) and ``best.pt`` (the
:class:`~fastrobust.training.state.BestEpoch`), and the wall-clock time, so time-to-last and
time-to-best epoch are known (the paper's Table I). At the end, the final weights and (when
they differ) the best epoch's are measured on the whole test set. See docs/architecture.md.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrobust import distributed, stops
from fastrobust.checkpoint import load_checkpoint, load_weights
from fastrobust.data import ImageDataset, load_dataset, make_loader
from fastrobust.data.base import to_float
from fastrobust.data.subsets import sample_split
from fastrobust.default_logging import log_to_stderr_unless_configured
from fastrobust.errors import CheckpointError, ConfigError, OutputError, TrainingDiverged
from fastrobust.model_info import check_model_fits
from fastrobust.models import ModelSpec, NormalizedModel, build_model
from fastrobust.models.resnet import resolve_stem
from fastrobust.outputs import check_output_dir
from fastrobust.seeding import RunSeeds
from fastrobust.training.config import TrainConfig, flatten
from fastrobust.training.methods import build_method
from fastrobust.training.monitor import OverfittingMonitor
from fastrobust.training.optimisation import build_optimiser, check_epochs_change
from fastrobust.training.run_folder import RunFolder, TrainResult
from fastrobust.training.setup import (
    check_before_training,
    check_evaluation_images,
    with_dataset_augmentation,
    wrap_for_training,
)
from fastrobust.training.state import BestEpoch, TrainState, weights_record
from fastrobust.training.step import autocast_context, training_step
from fastrobust.training.validation import (
    between_epoch_intervals,
    evaluate_split,
    fixed_batch_pgd_accuracy,
)

log = logging.getLogger(__name__)

LOG_EVERY = 10  # batches between progress-bar updates (the only host syncs in the loop)


class Trainer:
    """One run: ``__init__`` builds everything (and restores ``checkpoint``, a loaded
    ``last.pt``), :meth:`fit` runs the epochs. ``import_factory`` allows a
    ``package.module:factory`` model name in ``cfg`` to be imported: :func:`fit` sets it (the
    config is the caller's own), :func:`resume` only when asked (the config comes from a file)."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        net: nn.Module | None = None,
        dataset: ImageDataset | None = None,
        checkpoint: dict[str, Any] | None = None,
        folder: RunFolder | None = None,
        import_factory: bool = False,
    ) -> None:
        data_cfg = cfg.data
        self.world = distributed.world_info_from_env()
        if folder is None and self.world.is_main:  # before any work: a bad --out-dir costs nothing
            check_output_dir(cfg.runtime.out_dir, what="output folder")
        self.device = distributed.resolve_device(cfg.runtime.device, self.world.local_rank)
        self.data = (
            dataset
            if dataset is not None
            else load_dataset(data_cfg.dataset, data_cfg.data_dir, image_size=data_cfg.image_size)
        )
        # the caller's cfg stays as given; the run records the augmentation it really uses
        self.cfg = cfg = with_dataset_augmentation(cfg, self.data)
        data_cfg, runtime = cfg.data, cfg.runtime
        # before the rendezvous: a bad batch size fails at once on every rank
        check_before_training(cfg, self.data, self.world)
        distributed.init_distributed(self.world, self.device)
        if net is None and checkpoint is None:  # resnet18/50 at >= 64 px: the ImageNet stem,
            # recorded by its explicit name (a resumed run keeps the model it recorded)
            explicit = resolve_stem(cfg.optimisation.model, self.data.image_size)
            if explicit != cfg.optimisation.model:
                log.info("%s at %d px: %s", cfg.optimisation.model, self.data.image_size, explicit)
                cfg.optimisation.model = explicit
        self.spec = ModelSpec(
            name=cfg.optimisation.model if net is None else f"<object {type(net).__name__}>",
            num_classes=self.data.num_classes,
            in_channels=self.data.in_channels,
            image_size=self.data.image_size,
            mean=list(self.data.mean),
            std=list(self.data.std),
        )
        self.seeds = RunSeeds(runtime.seed)
        torch.manual_seed(self.seeds.weights())
        model = (
            NormalizedModel(net, self.spec.mean, self.spec.std)
            if net is not None
            else build_model(self.spec, import_factory=import_factory)
        )
        model.to(self.device)
        check_model_fits(
            model, self.data.test_x[:2], classes=self.data.classes, what=f"{self.data.name} images"
        )
        if runtime.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.world.rank > 0:
            # every rank starts from the same weights, but draws its own random starts (rank 0
            # keeps the one-process stream); per-rank RNG states are saved for exact resumes
            torch.manual_seed(self.seeds.random_starts(self.world.rank))
        self.method = build_method(cfg.attack)
        self.threat = cfg.threat()
        self.loader = make_loader(
            self.data,
            cfg.optimisation.batch_size // self.world.world_size,
            augment=data_cfg.augment,
            crop_padding=data_cfg.crop_padding,
            flip=data_cfg.flip,
            seed=runtime.seed,
            rank=self.world.rank,
            world_size=self.world.world_size,
            device=self.device,
            workers=data_cfg.workers,
            color_jitter=data_cfg.color_jitter,
            lighting=data_cfg.lighting,
        )
        self.optimizer, self.scheduler = build_optimiser(model, cfg.optimisation, len(self.loader))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=runtime.amp == "fp16")
        self.model, self.train_model = wrap_for_training(
            model, self.world, self.device, sync_bn=runtime.sync_bn, compile_model=runtime.compile
        )
        self.attack_model = torch.compile(self.model) if runtime.compile else self.model
        self.monitor = OverfittingMonitor(
            self.model, armed=self.method.perturbs, keep_good_weights=cfg.evaluation.early_stop
        )
        self.state = TrainState(best=BestEpoch(self.method.best_metric))
        if checkpoint is not None:
            self._restore(checkpoint)
        # class-stratified samples drawn from the run's seed (data.subsets); "legacy": the
        # subsets of runs recorded before, so that those resume as they would have gone on
        legacy = cfg.evaluation.subsets == "legacy"
        n_check = min(cfg.evaluation.overfit_check_size, len(self.data.train_y))
        self.check_subset = sample_split(
            self.data.train_y,
            n_check,
            self.seeds.legacy_overfit_batch() if legacy else self.seeds.subsets(),
            split="train",
            rule="random" if legacy else "stratified",
        )
        self.check_idx = self.check_subset.index_tensor()
        self.val_subset = sample_split(
            self.data.test_y,
            cfg.evaluation.eval_limit,
            self.seeds.subsets(),
            split="test",
            rule="first" if legacy else "stratified",
        )
        check_evaluation_images(self.data, self.val_subset.index_tensor(), seed=runtime.seed)
        self.intervals = between_epoch_intervals(
            cfg, n_train=len(self.data.train_y), n_test=len(self.data.test_y)
        )
        self.folder = folder or RunFolder.create(cfg, self.world, resolved=self.intervals.to_dict())
        self.folder.write_subsets(validation=self.val_subset, overfit_check=self.check_subset)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train the remaining epochs; the run folder is locked until this returns."""
        try:
            return self._fit()
        except OutputError as exc:  # e.g. the disk filled up: the last saved epoch is intact
            raise OutputError(
                f"{exc}; the run resumes from its last saved epoch: "
                f"fastrobust train --resume {self.folder.path}"
            ) from None
        finally:
            self.folder.unlock()

    def _fit(self) -> TrainResult:
        cfg, state = self.cfg, self.state
        with stops.held():
            if state.epoch == 0:
                self._save_last(None)  # resumable from the very start
            else:
                self.folder.rewrite_metrics(state.history)
        log.info(
            "training %s on %s (%d train images) with %s; run folder %s",
            self.spec.name,
            self.data.name,
            len(self.data.train_y),
            self.method.describe(),
            self.folder.path,
        )
        log.info(
            "validation every %d epoch(s) on %s; overfitting check every %d epoch(s) on %s",
            self.intervals.eval_every,
            self.val_subset.describe(),
            self.intervals.overfit_check_every,
            self.check_subset.describe(),
        )
        result = TrainResult(self.folder.path, epochs_done=state.epoch, history=state.history)
        start = time.perf_counter() - state.elapsed
        try:
            while state.epoch < self.total_epochs:
                t0 = time.perf_counter()
                metrics: dict[str, Any] = {"epoch": state.epoch + 1}
                metrics["lr"] = self.scheduler.get_last_lr()[0]
                self.method.start_epoch(state.epoch, self.total_epochs)
                metrics["attack"] = self.method.describe()  # which attack this epoch used
                metrics.update(self.train_epoch())
                metrics["train_time_s"] = time.perf_counter() - t0
                collapsed = self._check_and_validate(metrics)
                with stops.held():  # a stop waits until the epoch is recorded whole
                    state.epoch += 1
                    state.elapsed = metrics["elapsed_s"] = time.perf_counter() - start
                    state.history.append(metrics)
                    self._record(metrics)
                if collapsed and cfg.evaluation.early_stop:
                    result.collapsed_at = state.epoch
                    break
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM under stops.stop_on_signals
            result.interrupted = True
            result.stop_signal = getattr(exc, "signum", signal.SIGINT)
            log.warning(
                "stopped after epoch %d; resume with: fastrobust train --resume %s",
                state.epoch,
                self.folder.path,
            )
        return self._finish(result)

    @property
    def total_epochs(self) -> int:
        """Epochs this run lasts: the method may spend the epoch budget differently (free
        adversarial training replays each batch and runs fewer epochs)."""
        return self.method.epochs_to_run(self.cfg.optimisation.epochs)

    def record_epochs_change(self, epochs: int) -> None:
        """Continue to ``epochs`` instead of the planned total (resume ``--epochs``): recorded
        in ``last.pt`` and ``summary.json`` at once; ``config.yaml`` keeps the original plan."""
        state = self.state
        state.extensions.append(
            {"at_epoch": state.epoch, "from_epochs": self.cfg.epochs, "to_epochs": epochs}
        )
        self.cfg.epochs = epochs
        self._save_last(state.history[-1] if state.history else None)

    def train_epoch(self) -> dict[str, float]:
        """One pass over this rank's shard; loss and accuracy on the perturbed batches."""
        from tqdm.auto import tqdm

        cfg, device, epoch = self.cfg, self.device, self.state.epoch
        self.model.train()
        self.loader.set_epoch(epoch)
        sums = torch.zeros(3, device=device)  # loss * n, correct, n: summed on the device
        # the bar follows the logger, so silencing fastrobust's logging silences it too
        show = cfg.runtime.progress and self.world.is_main and log.isEnabledFor(logging.INFO)
        desc = f"epoch {epoch + 1}/{self.total_epochs}"
        with tqdm(
            total=len(self.loader), desc=desc, disable=not show, leave=False, dynamic_ncols=True
        ) as bar:
            for i, (x, y) in enumerate(self.loader):
                if cfg.runtime.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                for _ in range(self.method.replays):  # weight updates on this batch
                    loss, logits = training_step(
                        self.train_model,
                        self.attack_model,
                        self.method,
                        self.optimizer,
                        x,
                        y,
                        scaler=self.scaler,
                        autocast=autocast_context(cfg.runtime.amp, device),
                    )
                    self.scheduler.step()
                    with torch.no_grad():
                        sums[0] += loss * len(y)
                        sums[1] += (logits.argmax(1) == y).sum()
                        sums[2] += len(y)
                bar.update(1)
                if (i + 1) % LOG_EVERY == 0 or i + 1 == len(self.loader):  # a host sync
                    loss_avg, acc = (sums[:2] / sums[2]).tolist()
                    self._stop_if_diverged(loss_avg)
                    bar.set_postfix(loss=f"{loss_avg:.3f}", acc=f"{acc:.3f}")
        distributed.all_reduce_sum(sums)
        loss_avg, acc = (sums[:2] / sums[2]).tolist()
        self._stop_if_diverged(loss_avg)
        return {"train_loss": loss_avg, "train_acc": acc}

    def overfit_check(self) -> float:
        """PGD accuracy on the fixed training batch (the overfitting monitor's input)."""
        x = to_float(self.data.train_x[self.check_idx]).to(self.device)
        y = self.data.train_y[self.check_idx].to(self.device)
        return fixed_batch_pgd_accuracy(
            self.model,
            x,
            y,
            self.threat,
            steps=self.cfg.evaluation.eval_steps,
            batch_size=self.loader.batch_size,  # this rank's training batch: no memory peak
        )

    def validate(self, *, whole_split: bool = False) -> tuple[float, float]:
        """Clean and PGD accuracy on the test split (a class-stratified sample of
        ``eval_limit`` of its images when that is set: :attr:`val_subset`; every image with
        ``whole_split``)."""
        return evaluate_split(
            self.model,
            self.data.test_x,
            self.data.test_y,
            self.threat,
            indices=None if whole_split else self.val_subset.index_tensor(),
            steps=self.cfg.evaluation.eval_steps,
            batch_size=self.loader.batch_size,  # this rank's training batch, not the global one
            device=self.device,
            world=self.world,
        )

    # -- between epochs ---------------------------------------------------------------------------
    def _check_and_validate(self, metrics: dict[str, Any]) -> bool:
        """Overfitting check (rank 0) and validation after the epoch just trained, on their own
        random stream, so that they do not change training's; returns whether it collapsed.
        Each records its seconds (``check_time_s``, ``val_time_s``, ``test_time_s``)."""
        cfg, epoch = self.cfg, self.state.epoch + 1
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seeds.between_epochs(epoch))
            collapsed, acc = False, None
            check_due = epoch % self.intervals.overfit_check_every == 0
            if check_due and self.world.is_main and len(self.check_idx) > 0:
                t0 = time.perf_counter()
                acc = metrics["overfit_check_pgd_acc"] = self.overfit_check()
                metrics["check_time_s"] = time.perf_counter() - t0
                collapsed = self.monitor.update(acc, epoch=epoch)
                if collapsed:
                    metrics["catastrophic_overfitting"] = True
            collapsed, acc = distributed.broadcast_object((bool(collapsed), acc))  # type: ignore[misc]
            self.method.end_epoch(acc, collapsed)
            stop = collapsed and cfg.evaluation.early_stop
            if stop:  # every rank takes rank 0's last good weights
                good = self.monitor.good_weights
                good = distributed.broadcast_object(good) if self.world.distributed else good
                self.monitor.restore(good)  # type: ignore[arg-type]
            last = epoch == self.total_epochs
            if epoch % self.intervals.eval_every == 0 or last or stop:
                t0 = time.perf_counter()
                metrics["val_clean_acc"], metrics["val_adv_acc"] = self.validate()
                metrics["val_time_s"] = time.perf_counter() - t0
            if (last or stop) and not self.val_subset.is_whole_split:
                # the final weights on the whole test set, once (validation used a subset)
                t0 = time.perf_counter()
                metrics["test_clean_acc"], metrics["test_adv_acc"] = self.validate(whole_split=True)
                metrics["test_time_s"] = time.perf_counter() - t0
        return collapsed

    def _record(self, metrics: dict[str, Any]) -> None:
        if self.state.best.update(metrics):
            self.folder.save(self.folder.best_pt, self._weights(metrics))
        self._save_last(metrics)
        self.folder.append_metrics(metrics)
        parts = [f"epoch {self.state.epoch}/{self.total_epochs}"]
        parts += [f"loss {metrics['train_loss']:.4f}", f"train acc {metrics['train_acc']:.3f}"]
        if "val_clean_acc" in metrics:
            parts.append(f"val clean {metrics['val_clean_acc']:.3f}")
            parts.append(f"val adv {metrics['val_adv_acc']:.3f}")
        if "overfit_check_pgd_acc" in metrics:
            parts.append(f"train-batch PGD {metrics['overfit_check_pgd_acc']:.3f}")
        if self.world.is_main:
            log.info(" | ".join([*parts, f"{metrics['elapsed_s']:.1f}s"]))

    def _stop_if_diverged(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} in epoch {self.state.epoch + 1}; stopped, the last good "
                f"checkpoint is {self.folder.last_pt} (try a lower --lr)"
            )

    def _finish(self, result: TrainResult) -> TrainResult:
        state, best = self.state, self.state.best
        result.epochs_done, result.time_to_last_s = state.epoch, state.elapsed
        result.world_size = self.world.world_size
        result.extensions = list(state.extensions)
        result.subsets = {
            "validation": self.val_subset.to_dict(with_indices=False),
            "overfit_check": self.check_subset.to_dict(with_indices=False),
        }
        result.best_epoch, result.best_metric = best.epoch, best.metric
        result.best_value, result.time_to_best_s = best.value, best.elapsed_s
        validated = [h for h in state.history if "val_adv_acc" in h]
        if validated:
            result.val_clean_acc = validated[-1]["val_clean_acc"]
            result.val_adv_acc = validated[-1]["val_adv_acc"]
        if not result.interrupted and state.history:
            self._test_set_results(result)
        self.folder.write_summary(result)
        distributed.barrier()  # on every rank, fit() returns once the run folder is complete
        return result

    def _test_set_results(self, result: TrainResult) -> None:
        """The final and the best epoch's weights on the whole test set (``summary.json``).

        The final weights were measured in the last epoch (``test_*`` of its row, or its
        validation when that used the whole split); the best epoch's are measured here from
        ``best.pt`` unless they are the final ones or were validated on the whole split."""
        rows = {int(r["epoch"]): r for r in self.state.history}
        whole = self.val_subset.is_whole_split
        result.test_images = len(self.data.test_y)

        def on_test_set(row: dict[str, Any]) -> tuple[float, float] | None:
            if "test_adv_acc" in row:
                return row["test_clean_acc"], row["test_adv_acc"]
            if whole and "val_adv_acc" in row:
                return row["val_clean_acc"], row["val_adv_acc"]
            return None

        final = on_test_set(self.state.history[-1])
        if final is not None:
            result.test_clean_acc, result.test_adv_acc = final
        best = self.state.best.epoch
        if best is None:
            return
        measured = on_test_set(rows[best]) if best in rows else None
        if measured is None:
            t0 = time.perf_counter()
            measured = self._measure_best_on_test_set(best)
            result.best_test_s = time.perf_counter() - t0
        result.best_test_clean_acc, result.best_test_adv_acc = measured

    def _measure_best_on_test_set(self, epoch: int) -> tuple[float, float]:
        """Clean and PGD accuracy of ``best.pt``'s weights on the whole test set (every rank
        takes part; the model keeps its final weights afterwards)."""
        weights = None
        if self.world.is_main:
            weights = load_checkpoint(self.folder.best_pt)["model"]  # on the CPU
        if self.world.distributed:
            weights = distributed.broadcast_object(weights)
        final = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            self.model.load_state_dict(weights)  # type: ignore[arg-type]
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seeds.best_epoch_test(epoch))
                clean, adv = self.validate(whole_split=True)
        finally:
            self.model.load_state_dict(final)
        log.info(
            "best epoch %d on the whole test set (%d images): clean %.3f, adversarial %.3f",
            epoch,
            len(self.data.test_y),
            clean,
            adv,
        )
        return clean, adv

    # -- checkpoints ------------------------------------------------------------------------------
    def _weights(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        return weights_record(
            self.model,
            model_spec=self.spec.to_dict(),
            classes=self.data.classes,
            config=self.cfg.to_flat_dict(),
            epoch=self.state.epoch,
            metrics=metrics,
        )

    def _save_last(self, metrics: dict[str, Any] | None) -> None:
        state = self.state
        state.optimizer = self.optimizer.state_dict()
        state.scheduler = self.scheduler.state_dict()
        state.scaler = self.scaler.state_dict()
        state.monitor = self.monitor.state_dict()
        rng = {"cpu": torch.get_rng_state()}  # this rank's generators (its own GPU only)
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state.rng_ranks = distributed.all_gather_object(rng)  # type: ignore[assignment]
        state.method_ranks = distributed.all_gather_object(self.method.state_dict())  # type: ignore[assignment]
        self.folder.save(self.folder.last_pt, {**self._weights(metrics), **state.to_checkpoint()})

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        state = TrainState.from_checkpoint(checkpoint, best_metric=self.method.best_metric)
        try:
            recorded = checkpoint.get("model_spec", {}).get("name", "model")
            load_weights(self.model, checkpoint["model"], recorded=recorded, asked=self.spec.name)
            self.optimizer.load_state_dict(state.optimizer)
            self.scheduler.load_state_dict(state.scheduler)
            self.scaler.load_state_dict(state.scaler)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint cannot be resumed ({exc})") from None
        self.monitor.load_state_dict(state.monitor)
        self.state = state
        world, rngs = self.world, state.rng_ranks
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
            self.method.load_state_dict(methods[world.rank] if same_world else methods[0])
        torch.set_rng_state(mine["cpu"])
        if self.device.type == "cuda" and "cuda" in mine:
            torch.cuda.set_rng_state(mine["cuda"], self.device)
        if world.rank > 0 and not same_world:  # rank 0's stream, reseeded per rank
            torch.manual_seed(self.seeds.random_starts(world.rank, state.epoch))


def fit(
    cfg: TrainConfig,
    *,
    net: nn.Module | None = None,
    dataset: ImageDataset | None = None,
) -> TrainResult:
    """Train a model as ``cfg`` says; ``net`` replaces the registry model by any nn.Module
    mapping normalised images to logits (normalisation is added around it).

    Progress (a bar per epoch) and each epoch's summary go through the ``fastrobust`` logger,
    shown on stderr when the application configured no logging
    (:mod:`fastrobust.default_logging`); ``logging.getLogger("fastrobust").setLevel(
    logging.WARNING)`` silences both."""
    with log_to_stderr_unless_configured():
        return Trainer(cfg, net=net, dataset=dataset, import_factory=True).fit()


#: config fields that may change on resume without changing the result
RESUME_OVERRIDES = ("data_dir", "device", "workers", "progress")


def resume(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    net: nn.Module | None = None,
    dataset: ImageDataset | None = None,
    import_factory: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Continue a run from its ``last.pt`` exactly where it stopped; ``net``/``dataset`` as
    given to :func:`fit` when the run was started with them.

    ``epochs`` changes the planned total where the schedule allows it
    (:func:`~fastrobust.training.optimisation.check_epochs_change`: step and constant
    schedules, never below the epochs done). It is the epoch budget, as ``fit``'s config
    ``epochs``: a free run (``replays`` m) continues to ``ceil(epochs / m)`` epochs, so
    resuming with ``epochs=N`` equals a run started with N. The change is recorded in
    ``last.pt`` and ``summary.json`` (``extensions``), never in ``config.yaml``. A run already at its total
    returns at once with ``nothing_to_do`` set, writing nothing. The run folder is locked while
    training (:class:`~fastrobust.training.run_folder.RunLock`), so a second process resuming
    a live run stops with RunFolderLocked. A ``package.module:factory`` model recorded in the
    checkpoint is imported only with ``import_factory=True``.

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
    path = Path(run_dir).expanduser()
    ckpt = path / "last.pt" if path.is_dir() else path
    if not ckpt.is_file():
        raise CheckpointError(f"nothing to resume: {ckpt} does not exist")
    world = distributed.world_info_from_env()
    folder = RunFolder(ckpt.parent, writer=world.is_main)
    folder.lock()  # before reading: a live run's last.pt is about to change
    try:
        state = load_checkpoint(ckpt)
        if "optimizer" not in state:
            raise CheckpointError(f"{ckpt} holds weights only, not a resumable training state")
        cfg = TrainConfig.from_dict(state["config"])
        recorded = flatten(state["config"])
        if "subsets" not in recorded:  # recorded before subsets were class-stratified
            cfg.subsets = "legacy"
        if "overfit_check_every" not in recorded:  # ... and before the check had an interval
            cfg.overfit_check_every = 1
        if "flip" not in recorded and cfg.dataset == "imagefolder":  # ... and it always flipped
            cfg.flip = True
        done = int(state["epoch"])  # epochs run (free: epochs of replayed batches)
        runs = build_method(cfg.attack).epochs_to_run  # --epochs is a budget, as in fit
        if runs(epochs if epochs is not None else cfg.epochs) == done:
            folder.unlock()
            log.info("%s has trained %d epochs: nothing to do", folder.path, done)
            return TrainResult(folder.path, epochs_done=done, nothing_to_do=True)
        if epochs is not None:
            check_epochs_change(cfg.optimisation, done=done, epochs=epochs, epochs_to_run=runs)
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
        cfg.validate()
        folder.check_writable()
        trainer = Trainer(
            cfg,
            net=net,
            dataset=dataset,
            checkpoint=state,
            folder=folder,
            import_factory=import_factory,
        )
        if epochs is not None and epochs != cfg.epochs:
            trainer.record_epochs_change(epochs)
    except BaseException:
        folder.unlock()
        raise
    with log_to_stderr_unless_configured():
        return trainer.fit()
