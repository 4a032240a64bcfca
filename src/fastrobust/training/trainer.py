"""The training loop: ``fit`` for every training method, ``resume`` to continue a run exactly.

A run is checked and resolved once (:func:`~fastrobust.training.preflight.preflight`), then
built (:func:`~fastrobust.training.build.build`); nothing is written before both succeed.
Per batch (:mod:`~fastrobust.training.epoch`, :mod:`~fastrobust.training.step`): the training
method perturbs the batch on the unwrapped model, the weight update goes through the
(possibly DDP-wrapped) model (Goodwin et al. 2020, Algorithm 1). Per epoch
(:mod:`~fastrobust.training.between_epochs`): the catastrophic-overfitting check on a fixed
training batch (:mod:`~fastrobust.training.monitor`) every ``overfit_check_every`` epochs,
validation (clean + PGD) every ``eval_every`` epochs (both resolved by
:func:`~fastrobust.training.validation.between_epoch_intervals`), one metrics row,
``last.pt`` (the :class:`~fastrobust.training.state.TrainState`,
:mod:`~fastrobust.training.checkpointing`) and ``best.pt`` (the
:class:`~fastrobust.training.state.BestEpoch`), and the wall-clock time, so time-to-last and
time-to-best epoch are known (the paper's Table I). At the end, the final weights and (when
they differ) the best epoch's are measured on the whole test set. See docs/architecture.md.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrobust import distributed, stops
from fastrobust.checkpoint import load_checkpoint
from fastrobust.data import ImageDataset
from fastrobust.default_logging import log_to_stderr_unless_configured
from fastrobust.errors import CheckpointError, ConfigError, OutputError
from fastrobust.kernels import kernel_settings
from fastrobust.training.between_epochs import BetweenEpochs
from fastrobust.training.build import build
from fastrobust.training.checkpointing import Checkpointing, restore
from fastrobust.training.config import SECTION_OF, TrainConfig
from fastrobust.training.epoch import EpochTrainer
from fastrobust.training.methods import TrainingMethod, method_class
from fastrobust.training.optimisation import check_epochs_change
from fastrobust.training.preflight import preflight
from fastrobust.training.run_folder import RunFolder, TrainResult
from fastrobust.training.state import BestEpoch, TrainState, check_resumable
from fastrobust.training.trackers import open_run_trackers

log = logging.getLogger(__name__)


class Trainer:
    """One run: ``__init__`` checks everything (the preflight), then builds the run (and
    restores ``checkpoint``, a loaded ``last.pt``) and creates its folder; :meth:`fit` runs
    the epochs with its collaborators (:class:`EpochTrainer` trains an epoch,
    :class:`BetweenEpochs` checks and validates, :class:`Checkpointing` saves).
    ``import_factory`` allows a ``package.module:factory`` model name in ``cfg`` to be
    imported: :func:`fit` sets it (the config is the caller's own), :func:`resume` only when
    asked (the config comes from a file)."""

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
        plan = preflight(
            cfg,
            dataset=dataset,
            new_folder=folder is None,
            own_model=net is not None,
            resuming=checkpoint is not None,
        )
        parts = build(plan, net=net, import_factory=import_factory)
        self.plan, self.parts = plan, parts
        self.state = TrainState(best=BestEpoch(parts.method.best_metric))
        if checkpoint is not None:
            self.state = restore(plan, parts, checkpoint)
        resolved = plan.intervals.to_dict()
        self.folder = folder or RunFolder.create(plan.cfg, plan.world, resolved=resolved)
        self.folder.write_subsets(validation=plan.val_subset, overfit_check=plan.check_subset)
        self.epochs = EpochTrainer(plan, parts, self.folder.last_pt)
        self.between = BetweenEpochs(plan, parts, self.folder)
        self.checkpoints = Checkpointing(plan, parts, self.folder)
        self.trackers = open_run_trackers(
            plan.cfg,
            self.folder.path,
            is_main=plan.world.is_main,
            resolved=resolved,
            history=self.state.history,
        )

    # -- what callers and tests read --------------------------------------------------------------
    @property
    def cfg(self) -> TrainConfig:
        """The run's config as resolved (the dataset's augmentation, the model's name)."""
        return self.plan.cfg

    @property
    def model(self) -> nn.Module:
        """The unwrapped model."""
        return self.parts.model

    @property
    def method(self) -> TrainingMethod:
        return self.parts.method

    @property
    def device(self) -> torch.device:
        return self.plan.device

    @property
    def world(self) -> distributed.WorldInfo:
        return self.plan.world

    @property
    def total_epochs(self) -> int:
        """Epochs this run lasts: the method may spend the epoch budget differently (free
        adversarial training replays each batch and runs fewer epochs)."""
        return self.method.epochs_to_run(self.cfg.optimisation.epochs)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train the remaining epochs; the run folder is locked until this returns."""
        runtime = self.cfg.runtime
        kernels = kernel_settings(
            benchmark=runtime.cudnn_benchmark, deterministic=runtime.deterministic
        )
        try:
            with kernels:
                return self._fit()
        except OutputError as exc:  # e.g. the disk filled up: the last saved epoch is intact
            raise OutputError(
                f"{exc}; the run resumes from its last saved epoch: "
                f"fastrobust train --resume {self.folder.path}"
            ) from None
        finally:
            self.trackers.close("FAILED")  # a no-op after _finish closed them
            self.folder.unlock()

    def _fit(self) -> TrainResult:
        state = self.state
        with stops.held():
            if state.epoch == 0:
                self.checkpoints.save_last(state, None)  # resumable from the very start
            else:
                self.folder.rewrite_metrics(state.history)
        self._log_start()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        result = TrainResult(self.folder.path, epochs_done=state.epoch, history=state.history)
        start = time.perf_counter() - state.elapsed
        try:
            while state.epoch < self.total_epochs:
                t0 = time.perf_counter()
                metrics: dict[str, Any] = {"epoch": state.epoch + 1}
                metrics["lr"] = self.parts.scheduler.get_last_lr()[0]
                self.method.start_epoch(state.epoch, self.total_epochs)
                metrics["attack"] = self.method.describe()  # which attack this epoch used
                metrics.update(self.epochs.train_epoch(state.epoch, self.total_epochs))
                metrics["train_time_s"] = time.perf_counter() - t0
                collapsed = self.between.after_epoch(metrics, state.epoch + 1, self.total_epochs)
                with stops.held():  # a stop waits until the epoch is recorded whole
                    state.epoch += 1
                    state.elapsed = metrics["elapsed_s"] = time.perf_counter() - start
                    state.history.append(metrics)
                    self._record(metrics)
                if collapsed and self.cfg.evaluation.early_stop:
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

    def _log_start(self) -> None:
        plan = self.plan
        log.info(
            "training %s on %s (%d train images) with %s; run folder %s",
            self.parts.spec.name,
            plan.data.name,
            len(plan.data.train_y),
            self.method.describe(),
            self.folder.path,
        )
        log.info(
            "validation every %d epoch(s) on %s; overfitting check every %d epoch(s) on %s",
            plan.intervals.eval_every,
            plan.val_subset.describe(),
            plan.intervals.overfit_check_every,
            plan.check_subset.describe(),
        )

    def record_epochs_change(self, epochs: int) -> None:
        """Continue to ``epochs`` instead of the planned total (resume ``epochs``): recorded
        in ``last.pt`` and ``summary.json`` at once; ``config.yaml`` keeps the original plan."""
        state = self.state
        state.extensions.append(
            {"at_epoch": state.epoch, "from_epochs": self.cfg.epochs, "to_epochs": epochs}
        )
        self.cfg.epochs = epochs
        self.checkpoints.save_last(state, state.history[-1] if state.history else None)

    def _record(self, metrics: dict[str, Any]) -> None:
        state = self.state
        if state.best.update(metrics):
            self.folder.save(self.folder.best_pt, self.checkpoints.weights(state.epoch, metrics))
        self.checkpoints.save_last(state, metrics)
        self.folder.append_metrics(metrics)
        self.trackers.log_metrics(metrics, state.epoch)  # after the run folder's own record
        parts = [f"epoch {state.epoch}/{self.total_epochs}"]
        parts += [f"loss {metrics['train_loss']:.4f}", f"train acc {metrics['train_acc']:.3f}"]
        if "val_clean_acc" in metrics:
            parts.append(f"val clean {metrics['val_clean_acc']:.3f}")
            parts.append(f"val adv {metrics['val_adv_acc']:.3f}")
        if "overfit_check_pgd_acc" in metrics:
            parts.append(f"train-batch PGD {metrics['overfit_check_pgd_acc']:.3f}")
        if self.world.is_main:
            log.info(" | ".join([*parts, f"{metrics['elapsed_s']:.1f}s"]))

    def _finish(self, result: TrainResult) -> TrainResult:
        state, best, plan = self.state, self.state.best, self.plan
        result.epochs_done, result.time_to_last_s = state.epoch, state.elapsed
        result.world_size = self.world.world_size
        if self.device.type == "cuda":
            result.peak_device_memory_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        result.extensions = list(state.extensions)
        result.subsets = {
            "validation": plan.val_subset.to_dict(with_indices=False),
            "overfit_check": plan.check_subset.to_dict(with_indices=False),
        }
        result.best_epoch, result.best_metric = best.epoch, best.metric
        result.best_value, result.time_to_best_s = best.value, best.elapsed_s
        validated = [h for h in state.history if "val_adv_acc" in h]
        if validated:
            result.val_clean_acc = validated[-1]["val_clean_acc"]
            result.val_adv_acc = validated[-1]["val_adv_acc"]
        if not result.interrupted and state.history:
            self.between.test_set_results(state, result)
        self.folder.write_summary(result)
        self.trackers.log_summary(result.to_dict())
        self.trackers.close("KILLED" if result.interrupted else "FINISHED")
        distributed.barrier()  # on every rank, fit() returns once the run folder is complete
        return result


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


def _refuse_resume_overrides(overrides: dict[str, Any]) -> None:
    """Only :data:`RESUME_OVERRIDES` may change on resume (they leave the result as it is)."""
    refused = sorted(k for k, v in overrides.items() if v is not None and k not in RESUME_OVERRIDES)
    if refused:
        named = ", ".join(f"{SECTION_OF[k]}.{k}" if k in SECTION_OF else k for k in refused)
        allowed = ", ".join(f"{SECTION_OF[k]}.{k}" for k in RESUME_OVERRIDES)
        raise ConfigError(
            f"{named} cannot change when resuming (the run continues with its recorded "
            f"config); only optimisation.epochs and {allowed} may change",
            field=f"{SECTION_OF[refused[0]]}.{refused[0]}" if refused[0] in SECTION_OF else None,
        )


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
    _refuse_resume_overrides(overrides)
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
        check_resumable(state, ckpt)
        try:
            cfg = TrainConfig.from_recorded(state["config"])
        except ConfigError as exc:
            raise CheckpointError(f"{ckpt} cannot be resumed: key 'config': {exc}") from None
        done = int(state["epoch"])  # epochs run (free: epochs of replayed batches)
        method, options = method_class(cfg.attack.method), cfg.attack.options

        def runs(budget: int) -> int:  # epochs is a budget of passes, as in fit
            return method.epochs_for_budget(options, budget)

        if runs(epochs if epochs is not None else cfg.epochs) == done:
            folder.unlock()
            log.info("%s has trained %d epochs: nothing to do", folder.path, done)
            return TrainResult(folder.path, epochs_done=done, nothing_to_do=True)
        if epochs is not None:
            check_epochs_change(cfg.optimisation, done=done, epochs=epochs, epochs_to_run=runs)
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
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
