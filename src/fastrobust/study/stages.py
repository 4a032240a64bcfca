"""The stages of a study, each a plain function over one :class:`StudyContext`.

Every stage splits into pieces of work (``train/<label>``, ``curves/<label>``, ``table1``,
...). A piece runs only when :class:`~fastrobust.study.folder.StageCache` has no entry for it
with the same key; the key hashes the piece's settings and the *contents* of its inputs
(checkpoint and metrics digests), so deleting or retraining a run redoes exactly what was made
from it. Stages use the library's public functions only: :func:`fastrobust.fit`,
:mod:`fastrobust.evaluation.workflow`, :mod:`fastrobust.figures`, :mod:`fastrobust.timing`.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from fastrobust import distributed, stops
from fastrobust.checkpoint import load_model
from fastrobust.data.base import ImageDataset, to_float
from fastrobust.errors import CheckpointError, ConfigError, TrainingDiverged
from fastrobust.evaluation.settings import EvaluationSettings
from fastrobust.study.alignment import AlignmentScore, choose_sources, score_model
from fastrobust.study.config import StudyConfig, parse_judge
from fastrobust.study.folder import StageCache, StudyFolder, file_digest, fingerprint
from fastrobust.study.judges import (
    JUDGE_MODELS,
    Judge,
    KnnJudge,
    ModelJudge,
    judge_accuracy,
    mlp,
)
from fastrobust.training.config import TrainConfig
from fastrobust.training.run_folder import RunFolder, TrainResult

if TYPE_CHECKING:
    from fastrobust.represent import Norm

log = logging.getLogger(__name__)

#: TrainConfig fields that do not change what a run computes (left out of its cache key)
_RUNTIME_ONLY: tuple[str, ...] = ("data_dir", "workers", "device", "progress", "out_dir", "name")
_RUNTIME_ONLY += ("loggers", "tracking_uri", "experiment")  # where the numbers are also logged


@dataclass
class StudyContext:
    """What every stage needs: config, folder, cache, data, device, ranks, progress."""

    config: StudyConfig
    folder: StudyFolder
    cache: StageCache
    data: ImageDataset
    device: torch.device
    world: distributed.WorldInfo
    resume: bool = False
    force: bool = False
    """rerun pieces even when cached (``--only STAGE``)"""
    progress: bool = False
    keep_diverged: bool = False
    """a run whose loss diverges is recorded (``diverged.json``, its last good weights kept
    as its checkpoint) and the study goes on (the bench: a diverged seed is a result);
    otherwise the divergence stops the study"""
    on_piece: Callable[[str, str], None] = lambda stage, item: None
    """called before each piece of work runs (the progress display)"""
    ran: list[str] = field(default_factory=list)
    """pieces of work that ran in this invocation (the others came from the cache)"""

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    def checkpoint(self, label: str) -> Path:
        """The weights of a run that the study evaluates (best.pt or last.pt; a diverged
        run's last good weights, last.pt, when it saved no best.pt)."""
        run = self.folder.run(label)
        chosen = run / f"{self.config.evaluation.checkpoint}.pt"
        if not chosen.is_file() and (run / DIVERGED).is_file():
            return run / "last.pt"
        return chosen

    def load(self, path: Path, device: torch.device | None = None) -> torch.nn.Module:
        """A run's model with the weights the study evaluates (``evaluation.weights``)."""
        return load_model(
            path, device=device or self.device, weights=self.config.evaluation.weights
        )

    def weights_digest(self, path: Path) -> str:
        """The cache key's part for a run's weights: the file's digest, and which of its
        weights are loaded when not the default (so keys of ``auto`` are as before)."""
        weights = self.config.evaluation.weights
        return file_digest(path) + ("" if weights == "auto" else f":{weights}")

    def need_checkpoint(self, label: str, stage: str) -> Path:
        path = self.checkpoint(label)
        if not path.is_file():
            raise CheckpointError(
                f"stage {stage} needs the trained run {label!r} ({path} is missing); "
                "run the train stage first"
            )
        return path

    def run_piece(
        self,
        stage: str,
        item: str,
        key: str,
        work: Callable[[], list[Path]],
        *,
        all_ranks: bool = False,
    ) -> bool:
        """Run ``work`` unless the cache holds ``item`` with ``key``; record its outputs.
        Returns whether it ran. Work that is not ``all_ranks`` runs on rank 0 only."""
        done = self.cache.is_done(item, key) and not self.force
        done = bool(distributed.broadcast_object(done))
        if done:
            log.info("%s: cached", item)
            return False
        self.on_piece(stage, item)
        started = time.perf_counter()
        runs_here = all_ranks or self.is_main
        # a failure on any rank is raised on every rank, so none waits for one that stopped
        outputs = distributed.together(lambda: work() if runs_here else [], self.world)
        self.ran.append(item)
        if self.is_main:
            self.cache.record(item, key, outputs, time.perf_counter() - started)
        distributed.barrier()
        return True


# -- train --------------------------------------------------------------------------------------
def stop_if_interrupted(result: TrainResult) -> TrainResult:
    """A run stopped by Ctrl-C (the trainer catches it and returns) stops the study too: the
    piece is not recorded as done, so ``--resume`` continues the run where it stopped."""
    if result.interrupted:
        log.warning("study stopped; continue it with: fastrobust study --resume (same --out)")
        raise stops.Stopped(result.stop_signal or signal.SIGINT)
    return result


def _settings(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_flat_dict().items() if k not in _RUNTIME_ONLY}


def train_key(cfg: TrainConfig) -> str:
    return fingerprint(_settings(cfg))


def same_settings(wanted: TrainConfig, recorded: TrainConfig) -> bool:
    """Was a run folder trained as ``wanted`` says? A value ``wanted`` leaves to the run
    (None: the dataset's or method's default) may be recorded resolved, so it is not compared."""
    have = _settings(recorded)
    return all(have.get(k) == v for k, v in _settings(wanted).items() if v is not None)


#: written into a run folder whose training diverged when the study keeps going (the bench)
DIVERGED = "diverged.json"


def _run_state(run: RunFolder) -> str:
    """empty | complete | interrupted | diverged (recorded by a study that keeps going)."""
    if not run.path.is_dir() or not any(run.path.iterdir()):
        return "empty"
    if (run.path / DIVERGED).is_file():
        return "diverged"
    try:
        summary = run.read_summary()
    except CheckpointError:  # a damaged summary.json: the run did not finish cleanly
        summary = {}
    return "complete" if summary and not summary.get("interrupted") else "interrupted"


def record_divergence(run: RunFolder, message: str) -> Path:
    """Write ``diverged.json`` (the error, the epochs trained before it and their training
    time) into a run folder whose loss diverged; logs the divergence as a warning."""
    text = run.metrics_jsonl.read_text() if run.metrics_jsonl.is_file() else ""  # epoch 1
    rows = [json.loads(line) for line in text.splitlines() if line]
    record = {
        "message": message,
        "epochs_done": len(rows),
        "train_time_s": sum(float(r.get("train_time_s", 0.0)) for r in rows),
    }
    path = run.path / DIVERGED
    path.write_text(json.dumps(record, indent=2) + "\n")
    log.warning("run %s diverged (%s); recorded, going on", run.path.name, message)
    return path


def check_run_folder(cfg: TrainConfig, run: RunFolder, *, resume: bool) -> str:
    """The state of a method's run folder (:func:`_run_state`), or ConfigError if the study
    may not use it: trained with other settings, or unfinished without ``--resume``."""
    state = _run_state(run)
    if state != "empty":
        recorded, _ = run.read_config()
        if not same_settings(cfg, recorded):
            raise ConfigError(
                f"run folder {run.path} was trained with other settings than the study "
                "config asks for; delete it (or choose another --out) to retrain"
            )
    if state == "interrupted" and not resume:
        raise ConfigError(
            f"run folder {run.path} is unfinished (interrupted?); pass --resume to continue it"
        )
    return state


#: what a stage reads of each trained run: its checkpoint, or (timing) its metrics
RUN_INPUTS = {"curves": "checkpoint", "figures": "checkpoint", "alignment": "checkpoint",
              "table1": "metrics.jsonl", "figure1": "metrics.jsonl"}  # fmt: skip


def check_before_work(
    config: StudyConfig, folder: StudyFolder, *, stages: list[str], resume: bool
) -> None:
    """Every refusal the stages would make from the config and the study folder alone, made
    before any work and before anything is written (``study.yaml`` included): judges, run
    folders the train stage may not use, and trained runs a later stage reads."""
    if "alignment" in stages:
        for name in config.alignment.judges:
            if parse_judge(name)[0] == "model":
                check_judge_model(config, name)
    for spec in config.methods:
        cfg = config.train_config(spec, out_dir=folder.runs)
        run = RunFolder(folder.run(spec.label))
        if "train" in stages:
            check_run_folder(cfg, run, resume=resume)
            continue
        for stage in (s for s in stages if s in RUN_INPUTS):
            name = RUN_INPUTS[stage]
            path = run.path / (
                f"{config.evaluation.checkpoint}.pt" if name == "checkpoint" else name
            )
            if not path.is_file():
                raise CheckpointError(
                    f"stage {stage} needs the trained run {spec.label!r} ({path} is missing); "
                    "run the train stage first"
                )


def stage_train(ctx: StudyContext) -> None:
    """One normal run folder per method (all ranks train under torchrun)."""
    from fastrobust.training import fit, resume

    for spec in ctx.config.methods:
        cfg = ctx.config.train_config(spec, out_dir=ctx.folder.runs)
        cfg.progress = ctx.progress
        run_dir = ctx.folder.run(spec.label)
        key = train_key(cfg)

        def work(
            cfg: TrainConfig = cfg,
            run_dir: Path = run_dir,
            spec_label: str = spec.label,
        ) -> list[Path]:
            run = RunFolder(run_dir)
            state = check_run_folder(cfg, run, resume=ctx.resume)
            try:
                if state == "interrupted":
                    stop_if_interrupted(resume(run_dir, progress=cfg.progress))
                elif state == "empty":
                    if run_dir.is_dir():
                        run_dir.rmdir()
                    stop_if_interrupted(fit(cfg))
            except TrainingDiverged as exc:
                if not ctx.keep_diverged:
                    raise
                return [record_divergence(run, str(exc)), run.config_yaml, run.path / "last.pt"]
            if (run.path / DIVERGED).is_file():
                return [run.path / DIVERGED, run.config_yaml, ctx.checkpoint(spec_label)]
            return [run.summary_json, run.config_yaml, ctx.checkpoint(spec_label)]

        # the run folder's own state decides on every rank, so all ranks enter fit together
        ctx.run_piece("train", f"train/{spec.label}", key, work, all_ranks=True)


# -- curves -------------------------------------------------------------------------------------
def evaluation_settings(ctx: StudyContext) -> EvaluationSettings:
    """The settings ``fastrobust eval`` would be given for the study's curves."""
    cfg = ctx.config
    curve = cfg.evaluation.curve_settings(cfg.seed)
    return EvaluationSettings(
        **curve.to_dict(),
        norm=cast("Norm", cfg.norm),  # checked by EvaluationSettings (l2 or linf)
        eps=list(cfg.evaluation.eps),
        dataset=cfg.dataset,
        data_dir=cfg.data_dir,
        weights=cfg.evaluation.weights,
        progress=ctx.progress,
        workers=decode_workers(ctx),
    )


def decode_workers(ctx: StudyContext) -> int:
    """The DataLoader workers of the study's training runs (``training: {workers: N}``),
    which decode a disk dataset's images for its curves and certificates too."""
    return ctx.config.train_config(ctx.config.methods[0], out_dir=".").data.workers


def curve_piece(
    ctx: StudyContext, label: str, settings: EvaluationSettings
) -> tuple[str, str, Callable[[], list[Path]]]:
    """The curves stage's piece for one model: its cache item, its key and its work (the
    stage runs them in turn; a piece can also be run in another process and recorded)."""
    from fastrobust.evaluation.workflow import evaluate_model

    recorded = {"settings": settings.curve_only().to_dict(), "eps": settings.eps}
    ckpt = ctx.need_checkpoint(label, "curves")
    key = fingerprint(recorded, ctx.config.norm, ctx.weights_digest(ckpt))
    out = ctx.folder.curves / f"{label}.json"

    def work() -> list[Path]:
        model = ctx.load(ckpt)
        # under torchrun each rank evaluates its own shard of the points; counts are merged
        curve = evaluate_model(
            model, ctx.data, settings, label=label, device=ctx.device, world=ctx.world
        )
        if ctx.is_main:
            out.write_text(json.dumps(curve.to_dict(), indent=2) + "\n")
        return [out]

    return f"curves/{label}", key, work


def stage_curves(ctx: StudyContext) -> None:
    """The robustness curve of every model (Figure 2), then the report of all: the
    evaluation workflow's own steps, so the files are those ``fastrobust eval`` writes."""
    settings = evaluation_settings(ctx)
    recorded = {"settings": settings.curve_only().to_dict(), "eps": settings.eps}
    ctx.folder.curves.mkdir(parents=True, exist_ok=True)
    for spec in ctx.config.methods:
        item, key, work = curve_piece(ctx, spec.label, settings)
        ctx.run_piece("curves", item, key, work, all_ranks=True)
    curves = {s.label: ctx.folder.curves / f"{s.label}.json" for s in ctx.config.methods}
    key = fingerprint({k: file_digest(p) for k, p in curves.items()}, recorded)
    ctx.run_piece("curves", "curves/plot", key, lambda: plot_curves(ctx, settings))
    if ctx.config.certify is not None:
        certified_curves(ctx)


def certified_curves(ctx: StudyContext) -> None:
    """Certified L2 accuracy of every model by randomized smoothing (Cohen et al. 2019), when
    the config has a ``certify`` section: the certification workflow's own steps, so
    ``curves/certified.*`` are the files ``fastrobust certify`` writes, with the study's
    robustness curves drawn beside them."""
    from fastrobust.smoothing.workflow import certify_model, write_certification

    settings = ctx.config.certify_settings()
    assert settings is not None
    settings.progress = ctx.progress
    if "workers" not in (ctx.config.certify or {}):
        settings.workers = decode_workers(ctx)
    ckpts = {s.label: ctx.need_checkpoint(s.label, "curves") for s in ctx.config.methods}
    key = fingerprint(settings.record(), {k: ctx.weights_digest(p) for k, p in ckpts.items()})

    def work() -> list[Path]:
        from fastrobust.smoothing.report import read_empirical

        curves = {
            label: certify_model(ctx.load(p), ctx.data, settings, world=ctx.world)
            for label, p in ckpts.items()
        }
        if not ctx.is_main:
            return []
        report = ctx.folder.curves / "robustness.json"
        empirical = read_empirical(report) if report.is_file() else {}
        written = write_certification(ctx.folder.curves, curves, settings, empirical)
        return [written["png"], written["csv"], written["json"]]

    ctx.run_piece("curves", "curves/certified", key, work, all_ranks=True)


def plot_curves(ctx: StudyContext, settings: EvaluationSettings) -> list[Path]:
    """The report of every model's curve (``robustness.json`` / ``.csv`` / ``.png``), written
    by the evaluation workflow from the curves the study saved."""
    from fastrobust.evaluation.results import RobustnessCurve
    from fastrobust.evaluation.workflow import write_evaluation
    from fastrobust.model_info import model_info

    curves, paths = {}, {}
    for spec in ctx.config.methods:
        doc = json.loads((ctx.folder.curves / f"{spec.label}.json").read_text())
        ckpt = ctx.checkpoint(spec.label)
        info = model_info(ctx.load(ckpt, torch.device("cpu")))
        curves[spec.label] = RobustnessCurve.from_dict(doc, info)
        paths[spec.label] = str(ckpt)
    world_size = ctx.world.world_size
    written = write_evaluation(
        ctx.folder.curves, curves, settings, paths=paths, world_size=world_size
    )
    return [written["png"], written["csv"], written["json"]]


# -- timing -------------------------------------------------------------------------------------
def _metrics_digests(ctx: StudyContext, stage: str) -> dict[str, str]:
    out = {}
    for spec in ctx.config.methods:
        path = ctx.folder.run(spec.label) / "metrics.jsonl"
        if not path.is_file():
            raise CheckpointError(
                f"stage {stage} needs the trained run {spec.label!r} ({path} is missing); "
                "run the train stage first"
            )
        out[spec.label] = file_digest(path)
    return out


def table_baseline(ctx: StudyContext) -> int:
    """Table I is relative to the 7-step PGD run when there is one (the paper's baseline)."""
    for i, spec in enumerate(ctx.config.methods):
        cfg = ctx.config.train_config(spec, out_dir=".")
        if cfg.method == "pgd" and cfg.attack_steps == 7:
            return i
    return 0


def stage_table1(ctx: StudyContext) -> None:
    """Table I of the study's runs, relative to :func:`table_baseline` (``table1.csv/.json``)."""
    from fastrobust.timing.runs_table import read_run
    from fastrobust.timing.workflow import write_table_one

    key = fingerprint(_metrics_digests(ctx, "table1"))

    def work() -> list[Path]:
        runs = [read_run(ctx.folder.run(s.label)) for s in ctx.config.methods]
        write_table_one(runs, table_baseline(ctx), ctx.folder.timing)
        return [ctx.folder.timing / "table1.csv", ctx.folder.timing / "table1.json"]

    ctx.run_piece("table1", "table1", key, work)


def stage_figure1(ctx: StudyContext) -> None:
    """Figure 1 on this device, and the cost of one training step per method: the workflow of
    ``fastrobust timing --runs <the study's runs> --measure`` (the same files)."""
    from fastrobust.data.facts import DatasetFacts
    from fastrobust.timing.runs_table import read_run
    from fastrobust.timing.workflow import figure_one

    tm, cfg = ctx.config.timing, ctx.config
    first = cfg.train_config(cfg.methods[0], out_dir=".")
    key = fingerprint(
        tm.__dict__, first.to_flat_dict(), str(ctx.device), _metrics_digests(ctx, "figure1")
    )

    def work() -> list[Path]:
        runs = [read_run(ctx.folder.run(s.label)) for s in cfg.methods]
        facts = DatasetFacts.of(ctx.data)
        figure_one(tm, runs, ctx.folder.timing, facts=facts, device=ctx.device, seed=cfg.seed)
        out = ctx.folder.timing
        return [out / "timing.png", out / "steps.json", out / "measured.csv"]

    ctx.run_piece("figure1", "figure1", key, work)


# -- figures 3-5 --------------------------------------------------------------------------------
def source_pool(ctx: StudyContext, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images in ``[0,1]`` and labels to draw figure and alignment sources from (the same
    seeded pool for every model; :func:`fastrobust.figures.dataset_images`)."""
    from fastrobust.figures import dataset_images

    cfg = ctx.config
    x, y = dataset_images(model, dataset=cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed)
    return x.to(ctx.device), y.to(ctx.device)


def stage_figures(ctx: StudyContext) -> None:
    """Figures 3-5 for every model side by side: same seeds, source images and nodes (the
    figures of ``fastrobust visualize``, :func:`fastrobust.figures.draw_figure`)."""
    from fastrobust import figures
    from fastrobust.figure_settings import TargetedSettings
    from fastrobust.represent import Budget, Norm

    fig_cfg, cfg = ctx.config.figures, ctx.config
    digests = {
        s.label: ctx.weights_digest(ctx.need_checkpoint(s.label, "figures")) for s in cfg.methods
    }
    budget = Budget(norm=cast(Norm, cfg.norm), steps=fig_cfg.steps)
    for tool in fig_cfg.tools:
        key = fingerprint(tool, fig_cfg.__dict__, cfg.seed, digests)
        out = ctx.folder.figures / tool

        def work(tool: str = tool, out: Path = out) -> list[Path]:
            panels = [
                figures.Panel(s.label, ctx.load(ctx.checkpoint(s.label)),
                              str(ctx.checkpoint(s.label)))
                for s in cfg.methods
            ]  # fmt: skip
            x, y = source_pool(ctx, panels[0].model)
            classes = min(fig_cfg.targets, ctx.data.num_classes)
            settings = TargetedSettings(list(range(classes))) if tool == "targeted" else fig_cfg
            figure = figures.draw_figure(tool, panels, x, y, settings, budget=budget, seed=cfg.seed)
            paths = figure.save(out, norm=cfg.norm)
            return [paths["grid"], paths["json"]]

        ctx.run_piece("figures", f"figures/{tool}", key, work)


# -- alignment ----------------------------------------------------------------------------------
def check_judge_model(config: StudyConfig, name: str) -> str:
    """The model a model judge ``name`` trains, or ConfigError: the architecture under study
    (a judge must be independent), or no model at all."""
    from fastrobust.models import MODELS

    model = JUDGE_MODELS.get(name, name)
    if model == config.model:
        raise ConfigError(
            f"judge {name!r} has the architecture of the models under study; an independent "
            "judge needs another one"
        )
    if ":" not in model and model not in MODELS:
        raise ConfigError(
            f"study config: judge {name!r} is no model; choose knn, knn-K, "
            f"{', '.join(sorted({*JUDGE_MODELS, *MODELS}))} or package.module:factory"
        )
    return model


def _judge_run(ctx: StudyContext, name: str) -> TrainConfig:
    cfg = ctx.config
    model = check_judge_model(cfg, name)
    values = {
        **cfg.training,
        "dataset": cfg.dataset,
        "data_dir": cfg.data_dir,
        "image_size": cfg.image_size,
        "model": model,
        "method": "standard",
        "epochs": cfg.alignment.judge_epochs,
        "seed": cfg.seed,
        "out_dir": str(ctx.folder.judges),
        "name": f"judge-{name}",
        "progress": ctx.progress,
    }
    values.pop("steps", None)
    return TrainConfig.from_dict(values)


def load_judge(path: Path, name: str, ctx: StudyContext) -> torch.nn.Module:
    """A trained judge: the study's own factories (``mlp``) are built here and given the
    weights, so no factory name read from the file is ever imported; a ``package:factory``
    judge is the user's own choice in the study config."""
    if name in JUDGE_MODELS:
        data = ctx.data
        net = mlp(num_classes=data.num_classes, in_channels=data.in_channels,
                  image_size=data.image_size)  # fmt: skip
        return load_model(path, device=ctx.device, net=net)
    return load_model(path, device=ctx.device, import_factory=":" in name)


def build_judges(ctx: StudyContext) -> list[Judge]:
    """The study's judges (a model judge is trained once and cached as a run folder)."""
    from fastrobust.training import fit

    judges: list[Judge] = []
    for name in ctx.config.alignment.judges:
        kind, arg = parse_judge(name)
        if kind == "knn":
            if not isinstance(ctx.data.train_x, torch.Tensor):
                raise ConfigError(
                    f"judge {name!r} needs the training images in memory; {ctx.data.name} is "
                    "read from disk, so use a model judge (e.g. mlp or resnet18)"
                )
            judges.append(KnnJudge(to_float(ctx.data.train_x), ctx.data.train_y, k=int(arg)))
            continue
        run_cfg = _judge_run(ctx, name)
        run_dir = ctx.folder.judges / run_cfg.name

        def work(run_cfg: TrainConfig = run_cfg, run_dir: Path = run_dir) -> list[Path]:
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)  # a judge is the study's own, never a user's run
            stop_if_interrupted(fit(run_cfg))
            return [run_dir / "last.pt", run_dir / "summary.json"]

        ctx.run_piece(
            "alignment", f"alignment/judge-{name}", train_key(run_cfg), work, all_ranks=True
        )
        model = load_judge(run_dir / "last.pt", name, ctx)
        judges.append(
            ModelJudge(model, name, f"{name} ({run_cfg.model}), standard training, "
                       f"{run_cfg.epochs} epochs on the training split")
        )  # fmt: skip
    return judges


def stage_alignment(ctx: StudyContext) -> None:
    """Perceptual-alignment scores of every model under every judge at every budget."""
    from fastrobust.imaging import save_tensors

    al, cfg = ctx.config.alignment, ctx.config
    digests = {
        s.label: ctx.weights_digest(ctx.need_checkpoint(s.label, "alignment")) for s in cfg.methods
    }
    judges = build_judges(ctx)
    judge_ids = fingerprint(
        [(j.name, file_digest(ctx.folder.judges / f"judge-{j.name}" / "last.pt"))
         if isinstance(j, ModelJudge) else j.name for j in judges]
    )  # fmt: skip
    ctx.folder.alignment.mkdir(parents=True, exist_ok=True)
    first = ctx.load(ctx.checkpoint(cfg.methods[0].label))
    x_all, y_all = source_pool(ctx, first)
    judges_file = ctx.folder.alignment / "judges.json"

    def describe_judges() -> list[Path]:
        info = [
            {"name": j.name, "description": j.description,
             "clean_accuracy": judge_accuracy(j, x_all, y_all)}
            for j in judges
        ]  # fmt: skip
        judges_file.write_text(json.dumps(info, indent=2) + "\n")
        return [judges_file]

    ctx.run_piece("alignment", "alignment/judges", judge_ids, describe_judges)
    idx, targets = choose_sources(
        x_all, y_all, judges, al.images, ctx.data.num_classes, seed=cfg.seed
    )
    for spec in cfg.methods:
        key = fingerprint(al.__dict__, cfg.norm, cfg.seed, digests[spec.label], judge_ids)
        out = ctx.folder.alignment / f"{spec.label}.json"

        def work(label: str = spec.label, out: Path = out) -> list[Path]:
            model = ctx.load(ctx.checkpoint(label))
            scores, images = score_model(
                model, label, x_all[idx.to(x_all.device)], targets, judges, al.budgets,
                steps=al.steps, bootstrap=al.bootstrap, seed=cfg.seed,
                norm=cast("Norm", cfg.norm),
            )  # fmt: skip
            out.write_text(json.dumps([s.to_dict() for s in scores], indent=2) + "\n")
            examples = out.with_suffix(".npz")
            save_tensors(
                examples,
                **{f"eps_{i}": images[eps][:10] for i, eps in enumerate(al.budgets)},
                sources=x_all[idx[:10].to(x_all.device)].cpu(),
                targets=targets[:10],
            )
            return [out, examples]

        ctx.run_piece("alignment", f"alignment/{spec.label}", key, work)
    files = [ctx.folder.alignment / f"{s.label}.npz" for s in cfg.methods]
    key = fingerprint([file_digest(f) for f in files])
    ctx.run_piece("alignment", "alignment/examples", key, lambda: plot_alignment_examples(ctx))


def plot_alignment_examples(ctx: StudyContext) -> list[Path]:
    """A grid: the source images, then each model's perturbation at each budget."""
    import numpy as np

    from fastrobust.imaging import save_grid

    al, classes = ctx.config.alignment, ctx.data.classes
    rows, labels = [], []
    first = np.load(ctx.folder.alignment / f"{ctx.config.methods[0].label}.npz")
    rows.append(list(torch.from_numpy(first["sources"])))
    labels.append("source")
    targets = first["targets"].tolist()
    for spec in ctx.config.methods:
        with np.load(ctx.folder.alignment / f"{spec.label}.npz") as z:
            for i, eps in enumerate(al.budgets):
                rows.append(list(torch.from_numpy(z[f"eps_{i}"])))
                labels.append(f"{spec.label}, eps {eps:g}")
    out = ctx.folder.alignment / "examples.png"
    save_grid(
        out,
        rows,
        row_labels=labels,
        col_labels=[f"-> {classes[t]}" for t in targets],
        title="targeted perturbations that were scored (target above each column)",
    )
    return [out]


def load_scores(ctx: StudyContext) -> list[AlignmentScore]:
    scores = []
    for spec in ctx.config.methods:
        path = ctx.folder.alignment / f"{spec.label}.json"
        if path.is_file():
            scores += [AlignmentScore.from_dict(d) for d in json.loads(path.read_text())]
    return scores


STAGE_FUNCTIONS: dict[str, Callable[[StudyContext], None]] = {
    "train": stage_train,
    "curves": stage_curves,
    "table1": stage_table1,
    "figure1": stage_figure1,
    "figures": stage_figures,
    "alignment": stage_alignment,
}
