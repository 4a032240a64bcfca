"""The evaluation workflow: saved models in, the robustness report out (Goodwin et al. 2020,
Figure 2). ``fastrobust eval`` and the study's curves stage both run it.

:func:`evaluate` does every step in order, each one a function of its own so the study can
cache per model: check the output folder (before any work, :func:`output_folder`), load the
models and resolve what was left out from the first one (norm, eps grid, dataset and its
folder; :func:`resolve_models`), the curve of each model (:func:`evaluate_model`, sharded over
the ranks of a ``torchrun`` job), and the report (``robustness.json`` / ``.csv`` / ``.png``,
:func:`write_evaluation`). Under ``torchrun`` every rank calls it; a failure on any rank is
raised on every rank (:func:`~fastrobust.distributed.together`) and rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from fastrobust import distributed
from fastrobust.data.base import ImageDataset
from fastrobust.distributed import together
from fastrobust.errors import ConfigError, DataError, OutputError
from fastrobust.evaluation.curve import CurveRun
from fastrobust.evaluation.results import RobustnessCurve
from fastrobust.evaluation.settings import SECTION, EvaluationSettings, Norm
from fastrobust.evaluation.sharding import sharded_curve_for_run
from fastrobust.evaluation.tracked import track_evaluation
from fastrobust.model_info import ModelInfo
from fastrobust.tracking import check_trackers

log = logging.getLogger(__name__)


@dataclass
class EvaluatedModels:
    """What an evaluation runs on, resolved: the models, their names, norm, eps and data."""

    paths: list[Path]
    models: list[torch.nn.Module]
    labels: list[str]
    settings: EvaluationSettings
    """the settings with norm and eps filled in"""
    data: ImageDataset


@dataclass
class EvaluationResult:
    """The curves of an evaluation and where its report went (rank 0; other ranks: none)."""

    curves: dict[str, RobustnessCurve]
    settings: EvaluationSettings
    """the settings as run: norm and eps filled in"""
    dataset: str
    world_size: int = 1
    out: Path | None = None
    written: dict[str, Path] = field(default_factory=dict)
    """``json``, ``csv``, ``png`` -> the files written"""


def model_label(path: Path) -> str:
    """A short name for a model: its run folder, plus the file stem unless it is best.pt."""
    if path.is_dir():
        return path.resolve().name
    parent = path.resolve().parent
    if (parent / "config.yaml").is_file():
        return parent.name if path.stem == "best" else f"{parent.name}:{path.stem}"
    return path.stem


def unique_labels(labels: list[str]) -> list[str]:
    """``a, a`` -> ``a, a#2``: every model of a report gets its own name."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def default_out_dir(first: Path) -> Path:
    """``eval-<timestamp>`` next to the first run folder, else under ``runs/``."""
    first = first.resolve()
    run_dir = first if first.is_dir() else first.parent
    if not (run_dir / "config.yaml").is_file() and not first.is_dir():
        root = Path("runs")
    else:
        root = run_dir.parent
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out, k = root / f"eval-{stamp}", 1
    while out.exists():
        k += 1
        out = root / f"eval-{stamp}-{k}"
    return out


def output_folder(settings: EvaluationSettings, first: Path) -> Path:
    """Where the report goes (``settings.out`` or a new folder next to the first run),
    checked before any work: a file in the way, a read-only folder, a full disk."""
    from fastrobust.outputs import check_output_dir

    name = f"{SECTION}.out"
    out = Path(settings.out).expanduser() if settings.out else default_out_dir(first)
    try:
        check_output_dir(out, what=name if settings.out else "output folder", own=True)
    except OutputError as exc:
        exc.field = name if settings.out else None
        raise
    check_trackers(settings, out.parent, section=SECTION)  # a missing extra costs nothing
    return out


def default_eps(info: ModelInfo) -> list[float]:
    """0, e/4, e/2, e, 2e for the training eps e of ``info``."""
    eps = info.eps
    if not info.adversarially_trained or not eps:
        raise ConfigError(
            f"give {SECTION}.eps (the first model has no training eps to build a grid from)",
            field=f"{SECTION}.eps",
        )
    return [0.0, eps / 4, eps / 2, eps, 2 * eps]


def _size_option(data_name: str, info: ModelInfo) -> dict[str, Any]:
    """Disk datasets are resized to the size the (first) model was trained on."""
    from fastrobust.data.base import dataset_options

    if "image_size" in dataset_options(data_name) and info.spec is not None:
        return {"image_size": info.spec.image_size}
    return {}


def _resolved(settings: EvaluationSettings, info: ModelInfo) -> EvaluationSettings:
    """``settings`` with norm, eps and dataset read from the first model where left out."""
    # a checkpoint records its threat model's name, "l2" or "linf"
    norm = cast(Norm | None, settings.norm or info.norm)
    if norm is None:
        raise ConfigError(
            f"give {SECTION}.norm (the first checkpoint does not record one)",
            field=f"{SECTION}.norm",
        )
    eps = settings.eps
    if eps is None:
        if info.norm != norm:
            raise ConfigError(
                f"give {SECTION}.eps (the first model was trained under another norm)",
                field=f"{SECTION}.eps",
            )
        eps = default_eps(info)
    dataset = settings.dataset or info.dataset
    if dataset is None:
        raise ConfigError(
            f"give {SECTION}.dataset (the first checkpoint does not record its dataset)",
            field=f"{SECTION}.dataset",
        )
    return dataclasses.replace(settings, norm=norm, eps=eps, dataset=dataset)


def resolve_models(
    paths: Sequence[str | Path],
    settings: EvaluationSettings,
    *,
    device: torch.device,
    labels: Sequence[str] | None = None,
) -> EvaluatedModels:
    """Load the models, fill in what ``settings`` leaves to the first one, load the dataset
    (from the folder the first model was trained from, unless given) and check that every
    model fits it. ``labels`` name the models (default: from their paths)."""
    from fastrobust.checkpoint import load_model
    from fastrobust.data import load_dataset
    from fastrobust.data.disk_loader import head
    from fastrobust.model_info import check_model_fits, data_dir_for, model_info

    files = [Path(p).expanduser() for p in paths]
    models = [
        load_model(
            p,
            device=device,
            arch=settings.arch,
            dataset=settings.dataset,
            import_factory=settings.import_model_factory,
            weights=settings.weights,
        )
        for p in files
    ]
    names = list(labels) if labels is not None else unique_labels([model_label(p) for p in files])
    info = model_info(models[0])
    resolved = _resolved(settings, info)
    assert resolved.dataset is not None
    data_dir = data_dir_for(info, resolved.dataset, settings.data_dir)
    data = load_dataset(resolved.dataset, data_dir, **_size_option(resolved.dataset, info))
    probe = head(data.test_x, 2, workers=settings.workers)  # images on disk: by the workers
    for label, model in zip(names, models):
        try:
            check_model_fits(model, probe, data.test_y, classes=data.classes)
        except DataError as exc:
            raise DataError(f"{label} does not fit {data.name}: {exc}") from None
    return EvaluatedModels(files, models, names, resolved, data)


@contextmanager
def _failed_checks_reported_later() -> Iterator[None]:
    """The curve logs its failed checks; the report lists them, so they are not logged."""
    curve_log = logging.getLogger("fastrobust.evaluation.curve")
    level = curve_log.level
    curve_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        curve_log.setLevel(level)


def evaluate_model(
    model: torch.nn.Module,
    data: ImageDataset,
    settings: EvaluationSettings,
    *,
    label: str,
    device: torch.device | None = None,
    world: distributed.WorldInfo | None = None,
) -> RobustnessCurve:
    """The robustness curve of one model under resolved ``settings`` (norm and eps given),
    its points shared out over the ranks of the job (every rank calls it)."""
    if settings.norm is None or settings.eps is None:
        raise ConfigError(f"evaluate_model needs {SECTION}.norm and {SECTION}.eps")
    run = CurveRun(device=device, progress=settings.progress, label=label, workers=settings.workers)
    with _failed_checks_reported_later():
        return sharded_curve_for_run(
            model, data, settings.norm, settings.eps, settings.curve_only(), run, world
        )


def write_evaluation(
    out: Path,
    curves: dict[str, RobustnessCurve],
    settings: EvaluationSettings,
    *,
    paths: dict[str, str],
    world_size: int = 1,
) -> dict[str, Path]:
    """Write the report of ``curves`` (``robustness.json`` / ``.csv`` / ``.png``) into
    ``out``; the JSON records the curve settings, the time and the models' files."""
    from fastrobust.evaluation.report import write_report
    from fastrobust.outputs import writing

    extra: dict[str, Any] = {
        "settings": settings.curve_only().to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "paths": paths,
    }
    if world_size > 1:
        extra["world_size"] = world_size
    with writing("the evaluation results", out):
        return write_report(out, curves, extra=extra)


def evaluate(
    models: Sequence[str | Path],
    settings: EvaluationSettings | None = None,
    *,
    device: torch.device | None = None,
    world: distributed.WorldInfo | None = None,
    labels: Sequence[str] | None = None,
) -> EvaluationResult:
    """Evaluate saved models (run folders or ``.pt`` files) and write their report.

    The output folder is checked first, then the models load and the curves run (under
    ``torchrun`` each rank takes a shard of the points; every rank must call this); rank 0
    writes the report. ``device`` defaults to ``settings.device`` on this rank."""
    settings = settings or EvaluationSettings()
    world = distributed.world_info_from_env() if world is None else world
    if not models:
        raise ConfigError("give at least one model (a run folder or a .pt file)")
    dev = device or distributed.resolve_device(settings.device, world.local_rank)
    first = Path(models[0]).expanduser()
    out = together(lambda: output_folder(settings, first) if world.is_main else None, world)
    plan = together(lambda: resolve_models(models, settings, device=dev, labels=labels), world)
    curves = {
        label: evaluate_model(model, plan.data, plan.settings, label=label, device=dev, world=world)
        for label, model in zip(plan.labels, plan.models)
    }
    result = EvaluationResult(curves, plan.settings, plan.data.name, world.world_size)
    if world.is_main:
        assert out is not None
        paths = {label: str(p) for label, p in zip(plan.labels, plan.paths)}
        result.out = out
        result.written = write_evaluation(
            out, curves, plan.settings, paths=paths, world_size=world.world_size
        )
        track_evaluation(out, curves, plan.settings, result.written)
    return result
