"""Figure 1 and Table I as workflows: what ``fastrobust timing`` and the study's ``figure1`` and
``table1`` stages both call, so the two write the same files for the same settings.

* :func:`figure_one`: the timed training run (:func:`timed_run`: settings given, else the
  first run folder's, else the defaults), measured costs on this device, the lower bounds over
  batch sizes and GPU counts, and the files ``measured.csv``, ``estimate_batch.csv``,
  ``estimate_gpus.csv``, ``steps.json`` and ``timing.png``.
* :func:`write_table_one`: Table I of run folders as ``table1.csv`` and ``table1.json``.
* :func:`run_timing`: the whole command (Table I when there are runs, Figure 1 when measuring).

The lower bounds are estimated for standard training, every measured attack and every run's
attack (``{0, *steps, *run steps}``), so each run's measured time (a star) lies on a curve of
its own method; the batch sweep uses the batch sizes that were measured (a size that ran out of
GPU memory has no estimate) on ``procs`` GPUs, the first run's process count by default.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastrobust.attacks.threat import ThreatModel, threat_model
from fastrobust.data.facts import DatasetFacts, dataset_facts
from fastrobust.errors import ConfigError
from fastrobust.timing import measure
from fastrobust.timing.runs_table import RunRecord, read_run, table_one, write_rows_csv
from fastrobust.timing.settings import (
    NO_RUN_EVAL_EVERY,
    NO_RUN_GLOBAL_BATCH,
    TimingCommand,
    TimingSettings,
)
from fastrobust.training.config import SECTION_OF, TrainConfig
from fastrobust.training.methods import steps_label


@dataclass(frozen=True)
class TimedRun:
    """The training run whose time Figure 1 bounds, every value resolved."""

    model: str
    dataset: str
    facts: DatasetFacts
    schedule: measure.Schedule
    threat: ThreatModel
    amp: str
    channels_last: bool
    global_batch: int
    procs: int


def _recorded(runs: Sequence[RunRecord]) -> dict[str, Any] | None:
    """The first run's recorded TrainConfig values by flat name, or None without runs."""
    if not runs:
        return None
    return {k: v for k, v in runs[0].config.items() if k in SECTION_OF}


def timed_run(
    settings: TimingSettings,
    runs: Sequence[RunRecord] = (),
    *,
    facts: DatasetFacts | None = None,
) -> TimedRun:
    """Resolve each setting of the timed run: as given, else the first run's, else the default
    (TrainConfig's; ``facts``: the dataset's, read when not given)."""
    from fastrobust.training.validation import between_epoch_intervals

    recorded = _recorded(runs)
    base = None if recorded is None else TrainConfig(**recorded)
    cfg = base or TrainConfig()

    def pick(name: str) -> Any:
        value = getattr(settings, name)
        return value if value is not None else getattr(cfg, name)

    dataset = pick("dataset")
    facts = facts or dataset_facts(dataset, pick("data_dir"))
    n_train, n_test = facts.train_size, facts.test_size
    eval_every = settings.eval_every or (cfg.eval_every if base else NO_RUN_EVAL_EVERY)
    check_every = 1
    if recorded is not None:
        timed = TrainConfig(**{**recorded, "eval_every": eval_every})
        resolved = between_epoch_intervals(timed, n_train=n_train, n_test=n_test)
        eval_every, check_every = resolved.eval_every, resolved.overfit_check_every
    val_size = min(cfg.eval_limit or n_test, n_test)
    schedule = measure.Schedule(
        train_size=settings.train_size or n_train,
        val_size=settings.val_size if settings.val_size is not None else val_size,
        epochs=pick("epochs"),
        eval_every=int(eval_every),
        eval_steps=pick("eval_steps"),
        check_size=min(cfg.overfit_check_size, n_train),
        check_every=int(check_every),
    )
    return TimedRun(
        model=pick("model"),
        dataset=dataset,
        facts=facts,
        schedule=schedule,
        threat=threat_model(pick("norm"), pick("eps")),
        amp=pick("amp"),
        channels_last=bool(pick("channels_last")),
        global_batch=settings.global_batch or (cfg.batch_size if base else NO_RUN_GLOBAL_BATCH),
        procs=settings.procs or (runs[0].world_size if runs else 1),
    )


@dataclass
class FigureOne:
    """What :func:`figure_one` measured, estimated and wrote."""

    run: TimedRun
    curves: measure.TimingCurves
    methods: list[int]
    """attack steps of the estimated methods (0: standard training)"""
    by_batch: list[measure.Estimate]
    by_gpus: list[measure.Estimate]
    title: str
    files: list[Path] = field(default_factory=list)
    skipped_gpus: list[int] = field(default_factory=list)
    """GPU counts that do not divide the global batch (left out of the GPU sweep)"""

    @property
    def labels(self) -> list[str]:
        return [steps_label(k) for k in self.methods]

    def step_seconds(self) -> dict[str, float]:
        """Seconds of one training step of each method at the global batch."""
        b = self.run.global_batch
        return {
            steps_label(k): self.curves.attack_seconds(k, b)
            + self.curves.seconds(measure.TRAIN_STEP, b)
            for k in self.methods
        }


def _title(run: TimedRun, device: str) -> str:
    s = run.schedule
    return (
        f"{run.model} on {run.dataset}-shaped inputs {tuple(run.facts.image_shape)}, {device}; "
        f"{s.train_size} train images, {s.epochs} epochs, validation of "
        f"{s.val_size} images every {s.eval_every} epoch(s)"
    )


def figure_one(
    settings: TimingSettings,
    runs: Sequence[RunRecord],
    out_dir: str | Path,
    *,
    facts: DatasetFacts | None = None,
    device: Any = None,
    seed: int = 0,
    import_factory: bool = False,
) -> FigureOne:
    """Measure on ``device`` (None: ``settings.device``), estimate and write Figure 1 into
    ``out_dir``; ``runs`` give defaults and the measured stars. The model is built from
    ``seed``; a ``package:factory`` model is imported when the settings name it or with
    ``import_factory`` (a run folder's own is not otherwise trusted)."""
    import torch

    from fastrobust.distributed import resolve_device
    from fastrobust.models import ModelSpec, build_model
    from fastrobust.outputs import writing
    from fastrobust.timing.plot import plot_figure_one

    run = timed_run(settings, runs, facts=facts)
    check_gpus(settings, run)
    device = device if device is not None else resolve_device(settings.device or "auto")
    shape = run.facts.image_shape
    torch.manual_seed(seed)
    spec = ModelSpec(run.model, run.facts.num_classes, shape[0], shape[-1])
    net = build_model(spec, import_factory=settings.model is not None or import_factory)
    curves = measure.measure_curves(
        net, image_shape=shape, num_classes=run.facts.num_classes,
        batch_sizes=settings.batch_sizes, threat=run.threat, steps=settings.steps,
        device=device, repeats=settings.repeats, warmup=settings.warmup, amp=run.amp,
        channels_last=run.channels_last, name=run.model,
    )  # fmt: skip
    methods = sorted({0, *settings.steps, *(r.attack_steps for r in runs)})
    by_batch = measure.sweep_batch_sizes(
        curves, run.schedule, methods=methods,
        batch_sizes=curves.batch_sizes(measure.FORWARD), gpus=run.procs,
    )  # fmt: skip
    by_gpus = measure.sweep_gpus(
        curves, run.schedule, methods=methods, global_batch=run.global_batch, gpus=settings.gpus
    )
    result = FigureOne(run, curves, methods, by_batch, by_gpus, _title(run, curves.device))
    result.skipped_gpus = [g for g in settings.gpus if run.global_batch % g]
    out = Path(out_dir)
    files = {n: out / n for n in ("measured.csv", "estimate_batch.csv", "estimate_gpus.csv")}
    files.update({"steps.json": out / "steps.json", "timing.png": out / "timing.png"})
    with writing("the timing results", out):
        out.mkdir(parents=True, exist_ok=True)
        curves.to_csv(files["measured.csv"])
        measure.write_estimates_csv(by_batch, files["estimate_batch.csv"])
        measure.write_estimates_csv(by_gpus, files["estimate_gpus.csv"])
        doc = {
            "batch_size": run.global_batch,
            "device": curves.device,
            "step_seconds": result.step_seconds(),
        }
        files["steps.json"].write_text(json.dumps(doc, indent=2) + "\n")
        plot_figure_one(files["timing.png"], curves, by_batch, by_gpus, runs, title=result.title)
    result.files = list(files.values())
    return result


def check_gpus(settings: TimingSettings, run: TimedRun) -> None:
    """ConfigError (``timing.gpus``) unless some GPU count divides the global batch: the GPU
    sweep leaves out counts that do not, and would otherwise be empty."""
    if not any(run.global_batch % g == 0 for g in settings.gpus):
        raise ConfigError(
            f"timing.gpus {', '.join(map(str, settings.gpus))}: none divides the global batch "
            f"{run.global_batch}; give a GPU count that does (or another timing.global_batch)",
            field="timing.gpus",
        )


def baseline_index(spec: str, runs: Sequence[RunRecord]) -> int:
    """Table I's baseline: a run's position (0-based), folder name or path among ``runs``."""
    if spec.isdigit():
        return int(spec)
    for i, r in enumerate(runs):
        if spec in (r.name, r.path) or Path(spec).expanduser().resolve() == Path(r.path).resolve():
            return i
    raise ConfigError(f"timing.baseline {spec!r} is none of the runs", field="timing.baseline")


def write_table_one(
    runs: Sequence[RunRecord], baseline: int, out_dir: str | Path
) -> list[dict[str, Any]]:
    """Table I of ``runs`` relative to ``runs[baseline]``, written as ``table1.csv`` and
    ``table1.json`` into ``out_dir``; returns its rows."""
    from fastrobust.outputs import writing

    rows = table_one(runs, baseline)
    out = Path(out_dir)
    with writing("Table I", out):
        out.mkdir(parents=True, exist_ok=True)
        write_rows_csv(rows, out / "table1.csv")
        (out / "table1.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


@dataclass
class TimingReport:
    """What :func:`run_timing` did: Table I (with runs) and Figure 1 (when it measured)."""

    out: Path
    runs: list[RunRecord]
    baseline: int = 0
    table: list[dict[str, Any]] = field(default_factory=list)
    figure: FigureOne | None = None


def run_timing(
    command: TimingCommand, run_paths: Sequence[str | Path] = (), *, import_factory: bool = False
) -> TimingReport:
    """``fastrobust timing``: Table I of ``run_paths`` (if any) and, when measuring (default:
    without runs), Figure 1; everything written into ``command.out``."""
    from fastrobust.outputs import check_output_dir

    out = check_output_dir(command.out, field="timing.out", own=True)  # before any work
    runs = [read_run(p) for p in run_paths]
    report = TimingReport(out, runs)
    measuring = command.measure if command.measure is not None else not runs
    if runs:
        report.baseline = baseline_index(command.baseline, runs)
    if measuring:  # settings checked before Table I is written
        check_gpus(command, timed_run(command, runs))
    if runs:
        report.table = write_table_one(runs, report.baseline, out)
    if measuring:
        report.figure = figure_one(command, runs, out, import_factory=import_factory)
    return report
