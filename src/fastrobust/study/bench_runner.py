"""Running a benchmark (``fastrobust bench``): each (threat model, seed) is a study folder whose
``train`` and ``curves`` stages train and evaluate every method (AutoAttack, then the PGD curve
in the folder's ``pgd/``), cached by content; then every run's numbers are collected, the
collapse criterion applied and the report written (:mod:`fastrobust.study.bench_report`).
The protocol and its types are in :mod:`fastrobust.study.bench`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastrobust import distributed
from fastrobust.study.bench import BenchConfig, BenchRun, Threat
from fastrobust.study.folder import StageCache, StudyFolder
from fastrobust.study.stages import DIVERGED, StudyContext, stage_curves, stage_train
from fastrobust.study.tracked import pass_to_runs
from fastrobust.tracking import TrackingSettings, check_trackers


def bench_folders(root: Path, threat: Threat, seed: int) -> tuple[StudyFolder, StudyFolder]:
    """The study folder of a (threat, seed) and the folder of its PGD curves (same runs)."""
    main = StudyFolder(threat.seed_folder(root, seed))
    return main, _CurveFolder(main.root / "pgd", runs_of=main)


@dataclass(frozen=True)
class _CurveFolder(StudyFolder):
    """A study folder whose runs are another folder's (the PGD curves of the same runs)."""

    runs_of: StudyFolder = field(default_factory=lambda: StudyFolder(Path(".")))

    @property
    def runs(self) -> Path:
        return self.runs_of.runs


def run_bench(
    config: BenchConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    device: str = "auto",
    tracking: TrackingSettings | None = None,
) -> list[BenchRun]:
    """Train and evaluate every (threat, seed, method) of ``config`` in folder ``out``
    (cached pieces are skipped) and write the report; returns the runs it reports.
    ``tracking``: experiment trackers every training run logs to, live (one store for all)."""
    from fastrobust.data import load_dataset
    from fastrobust.outputs import check_output_dir
    from fastrobust.study.bench_report import write_bench_report

    out = Path(out).expanduser()
    check_output_dir(out, what="benchmark folder")
    world = distributed.world_info_from_env()
    tracking = tracking or TrackingSettings()
    check_trackers(tracking, out, section="bench", probe=world.is_main)
    dev = distributed.resolve_device(config.training.get("device", device), world.local_rank)
    data = load_dataset(config.dataset, config.data_dir, image_size=config.image_size)
    out.mkdir(parents=True, exist_ok=True)
    (out / "protocol.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    for threat in config.threats:
        for seed in config.seeds:
            for pgd, folder in zip((False, True), bench_folders(out, threat, seed)):
                folder.root.mkdir(parents=True, exist_ok=True)
                study = config.study(threat, seed, pgd=pgd)
                pass_to_runs(study, tracking, out)
                ctx = StudyContext(
                    config=study, folder=folder,
                    cache=StageCache(folder.root), data=data, device=dev, world=world,
                    resume=resume, progress=progress and world.is_main, keep_diverged=True,
                )  # fmt: skip
                if not pgd:
                    stage_train(ctx)
                stage_curves(ctx)
    runs = collect_runs(config, out)
    if world.is_main:
        write_bench_report(config, runs, out, device=dev)
    return runs


def _accuracy_at(curve: dict[str, Any], eps: float) -> float:
    grid = [float(e) for e in curve["eps"]]
    i = min(range(len(grid)), key=lambda j: abs(grid[j] - eps))
    return float(curve["accuracy"][i])


def collect_runs(config: BenchConfig, out: Path) -> list[BenchRun]:
    """Every run's numbers from the benchmark folder, with the collapse criterion applied."""
    runs: list[BenchRun] = []
    for threat in config.threats:
        for seed in config.seeds:
            main, pgd = bench_folders(out, threat, seed)
            for spec in config.methods:
                aa = json.loads((main.curves / f"{spec.label}.json").read_text())
                curve = json.loads((pgd.curves / f"{spec.label}.json").read_text())
                run_dir = main.run(spec.label)
                diverged = (run_dir / DIVERGED).is_file()
                if diverged:  # its training time is that of the epochs before it diverged
                    record = json.loads((run_dir / DIVERGED).read_text())
                    summary = {"time_to_last_s": record["train_time_s"]}
                else:
                    summary = json.loads((run_dir / "summary.json").read_text())
                metrics = run_dir / "metrics.jsonl"  # absent when epoch 1 diverged
                rows = metrics.read_text().splitlines() if metrics.is_file() else []
                flagged = any(json.loads(r).get("catastrophic_overfitting") for r in rows)
                runs.append(
                    BenchRun(
                        threat, spec.label, seed, _accuracy_at(aa, 0.0),
                        _accuracy_at(aa, threat.eps), float(summary["time_to_last_s"]),
                        summary.get("peak_device_memory_mb"), flagged or diverged,
                        [(float(e), float(a)) for e, a in zip(curve["eps"], curve["accuracy"])],
                        diverged=diverged,
                    )
                )  # fmt: skip
    for run in runs:
        best = max(r.autoattack for r in runs if r.threat == run.threat and r.label == run.label)
        run.collapsed = run.flagged or run.autoattack < config.collapse_ratio * best
    return runs
