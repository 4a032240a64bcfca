"""What a finished study hands to its report: one typed record gathered from the stages'
outputs in the study folder (run folders, robustness.json, timing CSVs, figure PNGs,
alignment.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastrobust.study.alignment import AlignmentScore
from fastrobust.study.config import StudyConfig


@dataclass(frozen=True)
class RunSummary:
    """One trained model of the study."""

    label: str
    method: str
    """training method (standard, fast, pgd, ...)"""
    attack_steps: int
    run_dir: str
    checkpoint: str
    """the weights studied (best.pt or last.pt)"""


@dataclass(frozen=True)
class JudgeSummary:
    name: str
    description: str
    clean_accuracy: float


@dataclass
class StudyResults:
    """Everything the report shows; fields a stage did not produce stay empty."""

    config: StudyConfig
    folder: Path
    setup: list[tuple[str, str]] = field(default_factory=list)
    """(what, value) lines: data, model, eps, hardware, versions, seeds"""
    stage_times: dict[str, float] = field(default_factory=dict)
    """wall-clock seconds of each stage when it last ran"""
    runs: list[RunSummary] = field(default_factory=list)
    table_one: list[dict[str, Any]] = field(default_factory=list)
    """rows of :func:`fastrobust.timing.runs_table.table_one`, in the order of ``runs``"""
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    """label -> the robustness curve as JSON (``RobustnessCurve.to_dict``)"""
    curve_attack: str = ""
    """how the curves were measured, in words"""
    step_seconds: dict[str, float] = field(default_factory=dict)
    """seconds of one training step (attack + update) per method label (standard, fast,
    pgd7, ...) at the study's batch size, measured by the Figure 1 stage"""
    timing_batch: int | None = None
    """batch size of ``step_seconds``"""
    figures: dict[str, Path] = field(default_factory=dict)
    """curves, figure1, features, interpolate, targeted, alignment -> PNG"""
    alignment: list[AlignmentScore] = field(default_factory=list)
    judges: list[JudgeSummary] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    """pieces of work that ran in the invocation that made these results (the rest were
    cached)"""

    def run(self, *, method: str, steps: int | None = None) -> RunSummary | None:
        """The first run trained with ``method`` (and ``steps`` attack steps, if given)."""
        for r in self.runs:
            if r.method == method and (steps is None or r.attack_steps == steps):
                return r
        return None

    def accuracy_at(self, label: str, eps: float) -> tuple[float, int] | None:
        """``(accuracy, n)`` of a model's curve at ``eps``, if that eps was evaluated."""
        curve = self.curves.get(label)
        if not curve:
            return None
        for e, acc in zip(curve["eps"], curve["accuracy"]):
            if abs(e - eps) < 1e-9:
                return float(acc), int(curve["n"])
        return None

    def time_to_last_s(self, label: str) -> float | None:
        for run, row in zip(self.runs, self.table_one):
            if run.label == label:
                return float(row["hours_to_last"]) * 3600
        return None
