"""The certification workflow: models in, certified-accuracy curves out (Cohen, Rosenfeld &
Kolter, ICML 2019). ``fastrobust certify`` runs :func:`certify`; :func:`certify_model` takes any
``nn.Module`` (inputs in [0,1], logits out) and data.

In order: the settings are checked (they are, on construction), the output folder is checked,
the models load and every one is checked to output logits for the data (all before any
sampling), then each model's points are certified, shared out over the ranks of a
``torchrun`` job in contiguous blocks (each point's noise is keyed by its index, so the merged
certificates equal a one-process run's), the smoothed-attack check runs on rank 0, and rank 0
writes ``certified.json`` / ``.csv`` / ``.png``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrobust import distributed
from fastrobust.data.base import ImageDataset, to_float
from fastrobust.data.disk_loader import decoded_batches, head
from fastrobust.data.imagefolder import LazyImages
from fastrobust.distributed import gather_together, together
from fastrobust.errors import ConfigError, DataError, OutputError
from fastrobust.evaluation.inputs import Data, data_tensors
from fastrobust.evaluation.sharding import plan_shards
from fastrobust.model_info import check_model_fits, model_device
from fastrobust.smoothing.check import smoothed_attack_check
from fastrobust.smoothing.core import Certificates, Smoothing, certify_points, check_logits
from fastrobust.smoothing.results import CertificationCurve
from fastrobust.smoothing.settings import SECTION, CertifySettings

log = logging.getLogger(__name__)

POINTS_PER_BATCH = 16
"""points of a disk dataset decoded together (the workers decode the next batches while these
are certified); points held in memory are certified as one block, as they always were"""


@dataclass
class CertificationResult:
    """The curves of a certification and where its report went (rank 0)."""

    curves: dict[str, CertificationCurve]
    settings: CertifySettings
    dataset: str
    world_size: int = 1
    out: Path | None = None
    written: dict[str, Path] = field(default_factory=dict)


def smoothing_of(settings: CertifySettings) -> Smoothing:
    """The statistical part of ``settings``."""
    s = settings
    return Smoothing(s.sigma, s.n0, s.n, s.alpha, s.batch_size, s.seed)


def _points(model: nn.Module, data: Data, settings: CertifySettings) -> tuple[Any, Any, Any]:
    x, y, info = data_tensors(data, settings.limit, settings.seed)
    classes = info.pop("classes")
    check_model_fits(model, head(x, 2, workers=settings.workers), y, classes=classes)
    return x, y, info


def certify_model(
    model: nn.Module,
    data: Data,
    settings: CertifySettings | None = None,
    *,
    world: distributed.WorldInfo | None = None,
) -> CertificationCurve:
    """Certify ``model`` smoothed with ``settings.sigma`` on ``data`` (an ImageDataset's test
    split or an ``(x, y)`` pair of [0,1] images); every rank of a job calls it and gets the
    merged curve. The smoothed-attack check runs on rank 0's first ``check_size`` points."""
    settings = settings or CertifySettings()
    world = distributed.world_info_from_env() if world is None else world
    device = model_device(model)
    x_all, y_all, info = together(lambda: _points(model, data, settings), world)
    workers = settings.workers
    together(lambda: check_logits(model, _floats(head(x_all, 4, workers=workers), device)), world)
    shards = plan_shards(len(y_all), 1, world.world_size)
    mine = shards[world.rank]
    smoothing = smoothing_of(settings)

    def work() -> Certificates:
        return _certify_shard(model, x_all, y_all, range(mine.start, mine.stop), settings)

    parts = gather_together(work, world)
    certificates = Certificates()
    for part in parts:
        certificates.extend(part)
    curve = CertificationCurve(
        certificates,
        settings.curve_radii,
        settings.sigma,
        settings.n0,
        settings.n,
        settings.alpha,
        settings.seed,
        info,
    )
    if world.distributed:
        curve.shards = [
            {**s.to_dict(), "time_s": round(p.time_s, 3)} for s, p in zip(shards, parts)
        ]
    if settings.checks and world.is_main and settings.attack_radii:
        k = min(settings.check_size, mine.n)
        curve.check = smoothed_attack_check(
            model,
            _floats(head(x_all, k, workers=workers), device),
            y_all[:k].to(device),
            certificates,
            smoothing,
            radii=settings.attack_radii,
            steps=settings.check_steps,
            samples=settings.check_samples,
            votes=settings.check_n,
        )
    return curve


def _certify_shard(
    model: nn.Module, x_all: Any, y_all: torch.Tensor, points: range, settings: CertifySettings
) -> Certificates:
    """CERTIFY on the points ``points`` of the set; images on disk are decoded by the
    workers, :data:`POINTS_PER_BATCH` at a time, the next batches while these are certified
    (each point's noise is keyed by its index, so the certificates do not depend on it)."""
    device, smoothing = model_device(model), smoothing_of(settings)
    step = POINTS_PER_BATCH if isinstance(x_all, LazyImages) else max(len(points), 1)
    out, spent = Certificates(), 0.0
    batches = decoded_batches(x_all, step, indices=points, workers=settings.workers)
    for xb, lo in zip(batches, range(points.start, points.stop, step)):
        part = certify_points(
            model, _floats(xb, device), y_all[lo : lo + step], smoothing, first_index=lo
        )
        out.extend(part)
        spent += part.time_s
    out.time_s = spent
    return out


def _floats(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device)
    return to_float(x) if x.dtype == torch.uint8 else x.float()


def output_folder(settings: CertifySettings, first: Path) -> Path:
    """``settings.out``, or a new ``certify-<timestamp>`` next to the first run; checked."""
    from fastrobust.outputs import check_output_dir

    if settings.out:
        out = Path(settings.out).expanduser()
    else:
        first = first.resolve()
        run_dir = first if first.is_dir() else first.parent
        out = run_dir.parent / f"certify-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        check_output_dir(out, what=f"{SECTION}.out" if settings.out else "output folder")
    except OutputError as exc:
        exc.field = f"{SECTION}.out" if settings.out else None
        raise
    return out


def load_models(
    paths: Sequence[str | Path], settings: CertifySettings, device: torch.device
) -> tuple[list[nn.Module], ImageDataset]:
    """The saved models and the dataset (the first model's unless given), each model checked
    to fit it and to output logits."""
    from fastrobust.checkpoint import load_model
    from fastrobust.data import load_dataset
    from fastrobust.model_info import data_dir_for, model_info

    models = [
        load_model(
            Path(p).expanduser(),
            device=device,
            arch=settings.arch,
            dataset=settings.dataset,
            import_factory=settings.import_model_factory,
        )
        for p in paths
    ]
    info = model_info(models[0])
    name = settings.dataset or info.dataset
    if name is None:
        raise ConfigError(
            f"give {SECTION}.dataset (the first checkpoint does not record its dataset)",
            field=f"{SECTION}.dataset",
        )
    data = load_dataset(name, data_dir_for(info, name, settings.data_dir))
    probe = head(data.test_x, 4, workers=settings.workers)  # images on disk: by the workers
    for path, model in zip(paths, models):
        try:
            check_model_fits(model, probe, data.test_y, classes=data.classes)
            check_logits(model, _floats(probe, device))
        except DataError as exc:
            raise DataError(f"{Path(path).name} does not fit {data.name}: {exc}") from None
    return models, data


def certify(
    models: Sequence[str | Path],
    settings: CertifySettings | None = None,
    *,
    device: torch.device | None = None,
    world: distributed.WorldInfo | None = None,
    labels: Sequence[str] | None = None,
) -> CertificationResult:
    """Certify saved models (run folders or ``.pt`` files) and write the report (rank 0).
    Every check (settings, output folder, models, logits) comes before any sampling."""
    from fastrobust.evaluation.workflow import model_label, unique_labels

    settings = settings or CertifySettings()
    world = distributed.world_info_from_env() if world is None else world
    if not models:
        raise ConfigError("give at least one model (a run folder or a .pt file)")
    dev = device or distributed.resolve_device(settings.device, world.local_rank)
    out = together(
        lambda: output_folder(settings, Path(models[0])) if world.is_main else None, world
    )
    empirical = _empirical(settings)
    nets, data = together(lambda: load_models(models, settings, dev), world)
    names = list(labels) if labels else unique_labels([model_label(Path(p)) for p in models])
    curves = {}
    for label, net in zip(names, nets):
        curves[label] = certify_model(net, data, settings, world=world)
        log.info("%s: certified %d points", label, curves[label].n)
    result = CertificationResult(curves, settings, data.name, world.world_size)
    if world.is_main:
        assert out is not None
        result.out, result.written = out, write_certification(out, curves, settings, empirical)
    return result


def _empirical(settings: CertifySettings) -> dict[str, tuple[list[float], list[float]]]:
    from fastrobust.smoothing.report import read_empirical

    if settings.empirical is None:
        return {}
    try:
        return read_empirical(settings.empirical)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{SECTION}.empirical {settings.empirical}: not a readable robustness.json ({exc})",
            field=f"{SECTION}.empirical",
        ) from None


def write_certification(
    out: Path,
    curves: dict[str, CertificationCurve],
    settings: CertifySettings,
    empirical: dict[str, tuple[list[float], list[float]]] | None = None,
) -> dict[str, Path]:
    """Write ``certified.json`` / ``.csv`` / ``.png`` into ``out``."""
    from fastrobust.outputs import writing
    from fastrobust.smoothing.report import write_report

    extra = {"settings": settings.record(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with writing("the certification results", out):
        return write_report(out, curves, extra=extra, empirical=empirical)
