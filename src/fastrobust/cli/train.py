"""``fastrobust train``: every TrainConfig field is a flag, grouped by config section, and so
is every option of every registered training method (grouped by method); ``--config`` YAML
(sectioned or flat) gives defaults."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from fastrobust.errors import ConfigError
from fastrobust.settings import add_settings_flags
from fastrobust.training.config import SECTION_OF, SECTIONS, TrainConfig
from fastrobust.training.methods import METHODS


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model (default: fast L2 training of a small CNN on the bundled digits)",
        description="Train with standard, fast (one random-start step) or K-step PGD "
        "adversarial training. Launch with torchrun for data-parallel training.",
    )
    p.add_argument("--config", help="YAML file of defaults (flags override it)")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in this folder exactly (with --epochs: a new total, for the "
        "step and constant schedules)",
    )
    p.add_argument(
        "--import-model-factory",
        action="store_true",
        help="with --resume: import and run the package.module:factory model the checkpoint "
        "names (only for checkpoints you trust)",
    )
    flags: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        group = p.add_argument_group(section, (cls.__doc__ or "").strip())
        flags.update(add_settings_flags(group, cls, section=section, skip=("options",)))
        if section == "attack":  # and the options of the methods registered by now
            for method in METHODS.values():
                taken = {flag[2:].replace("-", "_") for flag in flags.values()}
                flags.update(add_settings_flags(group, method.Options, section=section, skip=taken))
    p.set_defaults(func=run, flag_of=flags)


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """Every config field's flag value by flat name (None where the flag was not given)."""
    return {name: getattr(args, name, None) for name in SECTION_OF}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = _flag_values(args)
    if args.config:
        return TrainConfig.from_yaml(args.config, **overrides)
    return TrainConfig(**{k: v for k, v in overrides.items() if v is not None})


def _report(result: Any) -> None:
    from fastrobust.distributed import world_info_from_env

    if not world_info_from_env().is_main:
        return
    if result.nothing_to_do:
        print(
            f"nothing to do: {result.run_dir} has trained {result.epochs_done} epochs "
            f"(give --epochs above {result.epochs_done} to train more)"
        )
        return
    if result.interrupted:
        how = "interrupted" if result.stop_signal in (None, signal.SIGINT) else "stopped by SIGTERM"
        print(
            f"{how} after epoch {result.epochs_done} (saved in last.pt); resume with: "
            f"fastrobust train --resume {result.run_dir}"
        )
        return
    _report_finished(result)


def _report_finished(result: Any) -> None:
    """The lines of a run that trained to its end (or stopped early on collapse)."""
    if result.collapsed_at is not None:
        print(f"stopped at epoch {result.collapsed_at}: catastrophic overfitting (early stop)")
    if result.val_clean_acc is not None:
        print(
            f"validation accuracy: clean {result.val_clean_acc:.4f}, adversarial {result.val_adv_acc:.4f}"
        )
    if result.best_epoch is not None:
        print(
            f"best {result.best_metric.replace('val_', '').replace('_acc', '')} accuracy "
            f"{result.best_value:.4f} at epoch {result.best_epoch} "
            f"({result.time_to_best_s:.1f}s); {result.epochs_done} epochs in {result.time_to_last_s:.1f}s"
        )
    if result.test_adv_acc is not None:
        print(
            f"test set ({result.test_images} images), final weights: clean "
            f"{result.test_clean_acc:.4f}, adversarial {result.test_adv_acc:.4f}"
        )
    if result.best_test_adv_acc is not None and result.best_epoch != result.epochs_done:
        print(
            f"test set, best epoch {result.best_epoch} (best.pt): clean "
            f"{result.best_test_clean_acc:.4f}, adversarial {result.best_test_adv_acc:.4f}"
        )
    print(f"run folder: {result.run_dir}")


def run(args: argparse.Namespace) -> int:
    from fastrobust.distributed import shutdown_distributed
    from fastrobust.stops import exit_status, stop_on_signals
    from fastrobust.training import trainer as engine

    if args.import_model_factory and not args.resume:
        raise ConfigError("--import-model-factory only applies to --resume")
    with stop_on_signals():  # SIGTERM (schedulers) stops a run like Ctrl-C: resumable
        try:
            if args.resume:
                overrides = _flag_values(args)
                overrides.pop("epochs")
                if args.config:
                    raise ConfigError("--config cannot be combined with --resume")
                result = engine.resume(
                    args.resume,
                    epochs=args.epochs,
                    import_factory=args.import_model_factory,
                    **overrides,
                )
            else:
                result = engine.fit(config_from_args(args))
        finally:
            shutdown_distributed()
    _report(result)
    if result.interrupted:
        return exit_status(result.stop_signal or signal.SIGINT)
    return 0
