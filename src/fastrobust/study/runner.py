"""Run a study: check the config and data, run the stages (skipping cached work), write the
report. :func:`run_study` is the whole of ``fastrobust study``; the command line only parses
arguments and prints where the report is."""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from fastrobust import distributed
from fastrobust.errors import ConfigError
from fastrobust.evaluation.settings import RESTARTS, STEPS
from fastrobust.study.config import STAGES, StudyConfig, check_stage
from fastrobust.study.folder import STATE, StageCache, StudyFolder, fingerprint
from fastrobust.study.report import write_report
from fastrobust.study.results import JudgeSummary, RunSummary, StudyResults
from fastrobust.study.stages import (
    STAGE_FUNCTIONS,
    StudyContext,
    check_before_work,
    load_scores,
)
from fastrobust.study.tracked import pass_to_runs, track_study
from fastrobust.tracking import TrackingSettings, check_trackers
from fastrobust.version import __version__

log = logging.getLogger(__name__)

CONFIG_COPY = "study.yaml"


class _Progress:
    """One bar over the study's pieces of work: stage, run and the study's ETA (the trainer's
    own bar shows the epoch below it)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="study", unit="piece", disable=not enabled,
                        dynamic_ncols=True, position=0)  # fmt: skip
        self.current: str | None = None

    def piece(self, stage: str, item: str) -> None:
        if self.current is not None:
            self.bar.update(1)
        self.current = item
        name = item.split("/", 1)[-1]
        self.bar.set_description_str(stage if name == stage else f"{stage}: {name}")
        log.info("study: %s", item)

    def close(self) -> None:
        self.bar.close()


def _pieces(config: StudyConfig, stages: Sequence[str]) -> int:
    """How many pieces of work the stages hold at most (the progress bar's total)."""
    per = {
        "train": len(config.methods),
        "curves": len(config.methods) + 1 + (config.certify is not None),
        "table1": 1,
        "figure1": 1,
        "figures": len(config.figures.tools),
        "alignment": len(config.methods) + 2 + len(config.alignment.judges),
        "report": 1,
    }
    return sum(per[s] for s in stages)


def _setup_lines(ctx: StudyContext) -> list[tuple[str, str]]:
    from fastrobust.models import count_parameters
    from fastrobust.timing.measure import describe_device
    from fastrobust.training.validation import between_epoch_intervals

    cfg, data = ctx.config, ctx.data
    first = cfg.train_config(cfg.methods[0], out_dir=".")
    n_train, n_test = len(data.train_y), len(data.test_y)
    every = between_epoch_intervals(first, n_train=n_train, n_test=n_test).eval_every
    params = ""
    ckpt = ctx.checkpoint(cfg.methods[0].label)
    if ckpt.is_file():
        from fastrobust.checkpoint import load_model

        params = f" ({count_parameters(load_model(ckpt)) / 1e6:.2f}M parameters)"
    methods = []
    for spec in cfg.methods:
        tc = cfg.train_config(spec, out_dir=".")
        steps = f", {tc.attack_steps} step(s) of {tc.attack_alpha:.3g}" if tc.attack_steps else ""
        methods.append(f"{spec.label} ({tc.method}{steps})")
    ev = cfg.evaluation
    return [
        ("data", f"{data.name}: {len(data.train_y)} training and {len(data.test_y)} test images, "
                 f"{data.in_channels}x{data.image_size}x{data.image_size}, "
                 f"{data.num_classes} classes"),
        ("model", f"{cfg.model}{params}"),
        ("threat model", f"{cfg.norm} eps {cfg.eps:g} (pixels in [0,1])"),
        ("methods", "; ".join(methods)),
        ("training", f"{first.epochs} epochs, batch {first.batch_size}, SGD lr {first.lr:g} "
                     f"({first.schedule}), momentum {first.momentum:g}, weight decay "
                     f"{first.weight_decay:g}, validation every {every} epoch(s)"),
        ("evaluation", f"{', '.join(ev.attacks)}: {ev.steps or STEPS} steps x "
                       f"{ev.restarts or RESTARTS} restarts "
                       f"over eps {', '.join(f'{e:g}' for e in ev.eps)}; weights: "
                       f"{ev.checkpoint}.pt of each run"),
        ("hardware", f"{describe_device(ctx.device)}, {ctx.world.world_size} process(es)"),
        ("versions", f"fastrobust {__version__}, torch {torch.__version__}, "
                     f"Python {platform.python_version()}, {platform.system()}"),
        ("seed", f"{cfg.seed} (every run, curve, figure and score)"),
        ("written", time.strftime("%Y-%m-%d %H:%M:%S")),
    ]  # fmt: skip


def gather_results(ctx: StudyContext) -> StudyResults:
    """Read what the stages left in the study folder into one :class:`StudyResults`."""
    cfg, folder = ctx.config, ctx.folder
    results = StudyResults(config=cfg, folder=folder.root, setup=_setup_lines(ctx))
    results.stage_times = {s: ctx.cache.wall_s(s) for s in STAGES[:-1] if ctx.cache.wall_s(s)}
    for spec in cfg.methods:
        tc = cfg.train_config(spec, out_dir=".")
        results.runs.append(
            RunSummary(spec.label, tc.method, tc.attack_steps, str(folder.run(spec.label)),
                       ctx.checkpoint(spec.label).name)
        )  # fmt: skip
        curve = folder.curves / f"{spec.label}.json"
        if curve.is_file():
            results.curves[spec.label] = json.loads(curve.read_text())
    if results.curves:
        first = next(iter(results.curves.values()))
        results.curve_attack = (
            f"{first['norm']} {' -> '.join(first['attacks'])}, {first['steps']} steps x "
            f"{first['restarts']} restarts (step {first['step_size']}, {first['random_start']} "
            "start)"
        )
        if first.get("version"):  # an AutoAttack version: fixed budgets of its own
            results.curve_attack = (
                f"{first['norm']} AutoAttack ({first['version']}: {' -> '.join(first['attacks'])})"
            )
    table = folder.timing / "table1.json"
    if table.is_file():
        results.table_one = json.loads(table.read_text())
    steps = folder.timing / "steps.json"
    if steps.is_file():
        doc = json.loads(steps.read_text())
        results.step_seconds, results.timing_batch = doc["step_seconds"], doc["batch_size"]
    figures = {
        "curves": folder.curves / "robustness.png",
        "certified": folder.curves / "certified.png",
        "figure1": folder.timing / "timing.png",
        "alignment": folder.alignment / "examples.png",
        **{t: folder.figures / t / "grid.png" for t in cfg.figures.tools},
    }
    results.figures = {k: p for k, p in figures.items() if p.is_file()}
    results.alignment = load_scores(ctx)
    judges = folder.alignment / "judges.json"
    if judges.is_file():
        results.judges = [JudgeSummary(**j) for j in json.loads(judges.read_text())]
    return results


def _check_folder(out: Path, config: StudyConfig) -> None:
    """Refuse a folder that holds something other than a study (nothing is overwritten), a
    file in the way, or a folder that cannot be written."""
    from fastrobust.outputs import check_output_dir

    check_output_dir(out, what="study folder", own=True)
    if out.is_dir() and any(out.iterdir()) and not (out / STATE).is_file():
        if not (out / CONFIG_COPY).is_file():
            raise ConfigError(
                f"{out} is not empty and holds no study; choose another out folder", field="out"
            )


def run_study(
    config: StudyConfig,
    out: str | Path,
    *,
    resume: bool = False,
    only: str | None = None,
    progress: bool = False,
    device: str = "auto",
    tracking: TrackingSettings | None = None,
) -> StudyResults:
    """Run (or continue) the study ``config`` in folder ``out`` and write its report.

    Cached pieces of work are skipped; ``only`` reruns one stage (its inputs must exist);
    ``resume`` continues interrupted training runs. Under ``torchrun`` every rank must call
    this: training and the curves use all ranks, the other stages run on rank 0.
    ``tracking``: experiment trackers the runs and the study log to (:mod:`.tracked`).
    """
    from fastrobust.data import load_dataset

    if only is not None:
        check_stage(only)
    out = Path(out).expanduser()
    _check_folder(out, config)
    stages = [s for s in config.stages if s != "report"] if only is None else [only]
    check_before_work(config, StudyFolder(out), stages=stages, resume=resume)
    world = distributed.world_info_from_env()
    tracking = tracking or TrackingSettings()
    check_trackers(tracking, out, section="study", probe=world.is_main)
    pass_to_runs(config, tracking, out)
    if device != "auto":  # the runs train where everything else runs (a runtime setting)
        config.training.setdefault("device", device)
    dev = distributed.resolve_device(config.training.get("device", device), world.local_rank)
    data = load_dataset(config.dataset, config.data_dir, image_size=config.image_size)
    joined = world.distributed and not torch.distributed.is_initialized()
    distributed.init_distributed(world, dev)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config.write_yaml(out / CONFIG_COPY)
    distributed.barrier()
    bar = _Progress(_pieces(config, [*stages, "report"]), progress and world.is_main)
    ctx = StudyContext(
        config=config,
        folder=StudyFolder(out),
        cache=StageCache(out),
        data=data,
        device=dev,
        world=world,
        resume=resume,
        force=only is not None,
        progress=progress and world.is_main,
        on_piece=bar.piece,
    )
    try:
        for stage in stages:
            if stage != "report":
                STAGE_FUNCTIONS[stage](ctx)
        ctx.force = False
        results = gather_results(ctx)
        if "report" in config.stages or only == "report":
            key = fingerprint(
                {k: v["key"] for k, v in ctx.cache.entries.items() if k != "report"},
                config.to_dict(),
            )

            def report() -> list[Path]:
                return list(write_report(results))

            ctx.force = only == "report"
            ctx.run_piece("report", "report", key, report)
    finally:
        bar.close()
        if joined:  # leave the process group as found (every rank gets here)
            distributed.barrier()
            distributed.shutdown_distributed()
    results.ran = list(ctx.ran)
    if world.is_main:
        track_study(results, tracking, out)
    return results
