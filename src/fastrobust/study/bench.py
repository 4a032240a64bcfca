"""``fastrobust bench``: training methods x seeds x threat models under one protocol file.

A multi-seed benchmark in the manner of the FastAT Benchmark (Pan & Yao 2026: every method
under one protocol, three seeds, AutoAttack on the test set, cost relative to FGSM training),
built from the study's pieces: each (threat model, seed) is a study folder
(:class:`~fastrobust.study.folder.StudyFolder`) whose ``train`` and ``curves`` stages
(:mod:`fastrobust.study.stages`) train every method and evaluate it, cached by content, so a
rerun or ``--resume`` redoes only what is missing. Each model gets two evaluations: AutoAttack
(``autoattack`` section; by default AutoAttack's standard version) at the threat's eps on
test points, and a PGD curve over multiples of eps (``pgd_curve``). This module holds the
protocol (:class:`BenchConfig`) and the record of a run (:class:`BenchRun`); the runner is
:mod:`fastrobust.study.bench_runner`, the report (a table per threat model)
:mod:`fastrobust.study.bench_report`.

A seed *collapsed* (catastrophic overfitting) when its AutoAttack accuracy is below
``collapse_ratio`` times that of the method's best seed under the same threat model, when
the training's overfitting monitor flagged it, or when its loss diverged (the run is recorded
and its last good weights evaluated: one diverged seed does not stop the benchmark); the
report prints the criterion.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastrobust.errors import ConfigError
from fastrobust.evaluation.inputs import parse_eps_list
from fastrobust.settings import check_settings, in_range, setting
from fastrobust.study.config import (
    _MANAGED,
    EvaluationSection,
    MethodSpec,
    StudyConfig,
    _section,
    parse_method,
    read_yaml_mapping,
)
from fastrobust.tracking import TrackingSettings
from fastrobust.training.methods import method_class, method_names

log = logging.getLogger(__name__)


def digits_protocol() -> dict[str, Any]:
    """The default protocol (``configs/bench_digits.yaml`` writes it out): every registered
    method x 3 seeds on digits, L2 eps 1, 20 epochs, AutoAttack on 200 test points."""
    return {
        "title": "fast adversarial training benchmark on digits",
        "dataset": "digits",
        "model": "small_cnn",
        "methods": "all",
        "seeds": [0, 1, 2],
        "threats": [{"norm": "l2", "eps": 1.0}],
        "training": {
            "epochs": 20, "weight_average": 0.98, "label_smoothing": 0.1, "eval_limit": 200,
        },
        "autoattack": {"attacks": ["autoattack"], "limit": 200, "checkpoint": "last"},
        "pgd_curve": {
            "attacks": ["pgd"], "eps": [0, 0.25, 0.5, 1.0, 1.5, 2.0], "steps": 10,
            "restarts": 1, "limit": 200,
        },
        "collapse_ratio": 0.5,
        "baseline": "fast",
    }  # fmt: skip


@dataclass
class BenchCommand(TrackingSettings):
    """How one invocation of ``fastrobust bench`` runs (the benchmark is its protocol YAML),
    and the experiment trackers every run of it logs to (docs/trackers.md)."""

    config: str | None = None
    """protocol YAML (default: the bundled digits protocol, configs/bench_digits.yaml)"""
    out: str | None = None
    """benchmark folder (default: runs/bench-TIMESTAMP)"""
    data_dir: str | None = None
    """dataset folder (overrides the protocol's data_dir)"""
    resume: bool = False
    """continue an interrupted benchmark: unfinished runs resume where they stopped"""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N"""
    progress: bool = True
    """progress bars on stderr"""

    def __post_init__(self) -> None:
        check_settings(self, "bench")


@dataclass(frozen=True)
class Threat:
    """One threat model of the benchmark."""

    norm: str
    eps: float

    @property
    def label(self) -> str:
        return f"{self.norm}-{self.eps:.6g}"

    def seed_folder(self, root: Path, seed: int) -> Path:
        """The study folder of this threat model and ``seed`` in benchmark folder ``root``."""
        return root / self.label / f"seed-{seed}"


@dataclass
class CurveSection(EvaluationSection):
    """The PGD curve: ``eps`` are multiples of the threat model's eps."""

    eps: list[float] = setting(factory=lambda: [0.0, 0.25, 0.5, 1.0, 1.5, 2.0])
    """eps grid as multiples of each threat model's eps (the weights are the autoattack
    section's checkpoint)"""


def methods_for_norms(norms: set[str]) -> list[str]:
    """``methods: all``: every registered method, in registration order, that is defined for
    each of these norms (zerograd and liet have no L2 form, so an L2 protocol leaves them out)."""
    return [
        name
        for name in method_names()
        if (known := method_class(name).norms) is None or norms <= set(known)
    ]


@dataclass
class BenchConfig:
    """A benchmark protocol: dataset, model, methods, seeds, threat models, shared training
    settings, the AutoAttack and PGD-curve evaluations and the collapse criterion."""

    title: str = "fast adversarial training benchmark on digits"
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None
    model: str = "small_cnn"
    methods: list[MethodSpec] = field(default_factory=list)
    """method entries as in a study (a name, pgd-K, or a mapping with method and its keys)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    threats: list[Threat] = field(default_factory=lambda: [Threat("l2", 1.0)])
    training: dict[str, Any] = field(default_factory=dict)
    """TrainConfig keys shared by every run (epochs, lr, weight_average, label_smoothing...)"""
    autoattack: EvaluationSection = field(
        default_factory=lambda: EvaluationSection(attacks=["autoattack"], checkpoint="last")
    )
    """the headline evaluation at each threat's eps (and eps 0: clean accuracy); its
    checkpoint (last: the final weights, as the FastAT Benchmark reports; or best) and its
    weights (auto, ema or raw) are those of both evaluations"""
    pgd_curve: CurveSection = field(default_factory=CurveSection)
    collapse_ratio: float = setting(0.5, rule=in_range(0, 1))
    """a seed collapsed when its AutoAttack accuracy < this x the method's best seed's"""
    baseline: str = "fast"
    """the method label costs are relative to (the first method when it is not listed)"""
    certify: dict[str, Any] | None = None
    """randomized-smoothing certification of every model under each L2 threat model (the
    settings of ``fastrobust certify``, as in a study's ``certify`` section); the report then
    holds the certified accuracy per radius, mean and min-max over seeds"""

    def __post_init__(self) -> None:
        try:
            check_settings(self, "bench")
        except ConfigError as exc:  # a protocol key, not a flag: no field to render
            raise ConfigError(f"bench protocol: {exc}".replace("bench.", "")) from None
        if not self.methods:
            raise ConfigError("bench protocol: list at least one method under 'methods'")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("bench protocol: seeds must be a list of distinct integers")
        if not self.threats:
            raise ConfigError("bench protocol: list at least one threat model under 'threats'")
        for threat in self.threats:
            for seed in self.seeds:
                self.study(threat, seed)  # every run's TrainConfig is checked before any work

    def study(self, threat: Threat, seed: int, *, pgd: bool = False) -> StudyConfig:
        """The study of one (threat, seed): the methods' runs and one evaluation."""
        section = self.pgd_curve if pgd else self.autoattack
        grid = [e * threat.eps for e in section.eps] if pgd else [0.0, threat.eps]
        evaluation = dataclasses.replace(
            section, eps=grid, checkpoint=self.autoattack.checkpoint,
            weights=self.autoattack.weights,
        )  # fmt: skip
        try:
            return StudyConfig(
                title=self.title, dataset=self.dataset, data_dir=self.data_dir,
                image_size=self.image_size, model=self.model, norm=threat.norm,
                eps=threat.eps, seed=seed, methods=list(self.methods),
                training=dict(self.training), evaluation=evaluation,
                stages=["train", "curves"],
                certify=self.certify if not pgd and threat.norm == "l2" else None,
            )  # fmt: skip
        except ConfigError as exc:
            raise ConfigError(
                str(exc).replace("study config", f"bench protocol ({threat.label}, seed {seed})"),
                field=exc.field,
            ) from None

    @property
    def baseline_label(self) -> str:
        labels = [m.label for m in self.methods]
        return self.baseline if self.baseline in labels else labels[0]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["methods"] = [{"label": m.label, **m.settings} for m in self.methods]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"bench protocol: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}"
            )
        values = dict(data)
        methods = values.get("methods", [])
        if methods == "all":  # every registered method defined for the protocol's norms
            threats = values.get("threats") or [{"norm": "l2"}]  # the default threat model's
            methods = methods_for_norms(
                {str(t.get("norm")) for t in threats if isinstance(t, dict)}
            )
        if not isinstance(methods, list):
            raise ConfigError("bench protocol: methods must be a list or all")
        values["methods"] = [parse_method(m, i) for i, m in enumerate(methods)]
        values["threats"] = [_threat(t, i) for i, t in enumerate(values.get("threats") or [])]
        if "autoattack" in values:
            given = {
                "attacks": ["autoattack"],
                "checkpoint": "last",
                **(values["autoattack"] or {}),
            }
            values["autoattack"] = _section(
                EvaluationSection, "autoattack", given, what="bench protocol"
            )
        if "pgd_curve" in values:
            values["pgd_curve"] = _section(
                CurveSection, "pgd_curve", values["pgd_curve"], what="bench protocol"
            )
        training = values.get("training") or {}
        if not isinstance(training, dict):
            raise ConfigError("bench protocol: training must be a mapping of TrainConfig keys")
        managed = sorted(set(training) & _MANAGED)
        if managed:
            raise ConfigError(
                f"bench protocol: training.{managed[0]} is set by the benchmark; put it at the "
                "top level (dataset, model, seeds, threats)"
            )
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"bench protocol: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> BenchConfig:
        """Read a protocol YAML; ``overrides`` (top-level keys, None: keep) take precedence."""
        data = read_yaml_mapping(path, "bench protocol")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)


def _threat(entry: Any, index: int) -> Threat:
    """``{norm: linf, eps: 8/255}`` (eps a number or a fraction) as a :class:`Threat`."""
    if not isinstance(entry, dict) or set(entry) != {"norm", "eps"}:
        raise ConfigError(
            f"bench protocol: threats[{index}] must be a mapping of norm and eps, got {entry!r}"
        )
    eps = entry["eps"]
    if isinstance(eps, str):
        eps = parse_eps_list(eps, field=f"threats[{index}].eps")[0]
    if isinstance(eps, bool) or not isinstance(eps, int | float) or eps <= 0:
        raise ConfigError(f"bench protocol: threats[{index}].eps must be > 0, got {eps!r}")
    return Threat(str(entry["norm"]), float(eps))


@dataclass
class BenchRun:
    """One trained and evaluated model of the benchmark."""

    threat: Threat
    label: str
    seed: int
    clean: float
    """clean accuracy on the AutoAttack points"""
    autoattack: float
    """AutoAttack accuracy at the threat's eps"""
    train_s: float
    """training wall-clock seconds (summary.json's time_to_last_s)"""
    peak_memory_mb: float | None
    flagged: bool
    """the training's overfitting monitor saw a collapse, or its loss diverged"""
    pgd_curve: list[tuple[float, float]]
    collapsed: bool = False
    diverged: bool = False
    """the loss became NaN or infinite: the run stopped and its last good weights were
    evaluated"""


def collapse_criterion(config: BenchConfig) -> str:
    """The collapse criterion in words (printed in the report and by the CLI)."""
    return (
        f"a seed collapsed when its AutoAttack accuracy is below {config.collapse_ratio:g} x "
        "that of the method's best seed under the same threat model, when the training's "
        "catastrophic-overfitting monitor flagged it, or when its loss diverged (its last good "
        "weights are evaluated)"
    )
