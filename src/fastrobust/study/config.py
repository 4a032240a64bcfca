"""The study's typed configuration, read from YAML and validated before anything runs.

A study is the paper's whole experiment (Goodwin et al., HPEC 2020): train several methods
on one dataset, model and threat model, time them (Table I, Figure 1), evaluate robustness
over eps (Figure 2), look inside the models (Figures 3-5) and score how perceptually aligned
their targeted perturbations are. Every mistake in a config (unknown key, method, stage,
judge, a dataset folder that does not exist) is a :class:`ConfigError` or :class:`DataError`
with one line saying what to fix, raised before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fastrobust.errors import ConfigError, DataError
from fastrobust.evaluation.settings import CurveSettings
from fastrobust.figure_settings import TOOL_SETTINGS, FeatureSettings, InterpolationSettings
from fastrobust.settings import at_least, check_settings, non_negative, setting
from fastrobust.smoothing.settings import CertifySettings
from fastrobust.timing.settings import TimingSettings
from fastrobust.tracking.settings import TrackingSettings
from fastrobust.training.config import TrainConfig, flatten

#: every stage of a study, in the order they run
Stage = Literal["train", "curves", "table1", "figure1", "figures", "alignment", "report"]
STAGES: tuple[str, ...] = typing.get_args(Stage)


@dataclass
class StudyCommand(TrackingSettings):
    """How one invocation of ``fastrobust study`` runs (the study itself is its YAML config),
    and the experiment trackers its runs and the study log to."""

    config: str | None = None
    """study YAML (default: the bundled digits study)"""
    out: str | None = None
    """study folder (default: runs/study-TIMESTAMP)"""
    data_dir: str | None = None
    """dataset folder (overrides the config's data_dir)"""
    resume: bool = False
    """continue an interrupted study: unfinished training runs resume where they stopped"""
    only: Stage | None = None
    """rerun one stage (its inputs must exist)"""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N"""
    progress: bool = True
    """progress bars: stage, run, epoch and ETA"""

    def __post_init__(self) -> None:
        check_settings(self, "study")


#: the three visualisations of the paper (Figures 3, 4 and 5)
FIGURE_TOOLS = tuple(TOOL_SETTINGS)
#: settings of a method entry that belong to the study, not to the training run
_STUDY_ONLY = {"label"}
#: TrainConfig fields the study sets itself (per run), never taken from the config
_MANAGED = {"out_dir", "name", "progress", "dataset", "data_dir", "image_size", "model"}
_MANAGED |= {"norm", "eps", "seed"}


@dataclass(frozen=True)
class MethodSpec:
    """One training method of the comparison: a label and the TrainConfig values it changes."""

    label: str
    """name of the run folder and of the model in every table and figure"""
    settings: dict[str, Any]
    """TrainConfig keys of this method (``method`` at least), over the shared ``training``"""


@dataclass
class EvaluationSection(CurveSettings):
    """Robustness curves (the paper's Figure 2): one cascade per model over the eps grid, with
    the settings of ``fastrobust eval`` (:class:`~fastrobust.evaluation.CurveSettings`)."""

    # a wider type than CurveSettings.seed on purpose: None defers to the study's seed
    seed: int | None = setting(None, rule=non_negative())  # type: ignore[assignment]  # see above
    """seed of the random starts and of the sample under a limit (None: the study's seed)"""
    eps: list[float] = setting(factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    """eps grid; the training eps is added when missing"""
    checkpoint: Literal["best", "last"] = "best"
    """which weights of each run to study: best (the paper's Table I) or last"""
    weights: Literal["auto", "ema", "raw"] = "auto"
    """of runs trained with weight_average: auto (the average when the checkpoint has one),
    ema (the average) or raw (the trained weights); every stage that loads a run's weights
    loads these"""

    def curve_settings(self, study_seed: int) -> CurveSettings:
        """The curve's settings, the study's seed where none is set here."""
        return self.curve_only(seed=study_seed if self.seed is None else self.seed)


@dataclass
class FiguresSection(FeatureSettings, InterpolationSettings):
    """Figures 3-5 for every model side by side, same seeds, images and nodes: the settings of
    ``fastrobust visualize features`` and ``interpolate``, and these."""

    tools: list[str] = setting(factory=lambda: list(FIGURE_TOOLS))
    """which visualisations: features, interpolate, targeted"""
    targets: int = setting(10, rule=at_least(1))
    """targeted perturbations: number of target classes shown (the first N)"""
    steps: int | None = setting(None, rule=at_least(1))
    """PGD steps of every visualisation (None: scaled to the image size)"""

    def __post_init__(self) -> None:
        check_settings(self, "figures")
        for tool in self.tools:
            if tool not in FIGURE_TOOLS:
                raise ConfigError(
                    f"figures.tools: unknown figure {tool!r}; choose from "
                    f"{', '.join(FIGURE_TOOLS)}",
                    field="figures.tools",
                )


@dataclass
class AlignmentSection:
    """The perceptual-alignment score: do large targeted perturbations look like the target?"""

    budgets: list[float] = field(default_factory=lambda: [3.0, 1.5])
    """L2 radii (a large one, and one small enough that a standard model cannot simply redraw
    the image)"""
    judges: list[str] = field(default_factory=lambda: ["knn", "mlp"])
    """independent judges: knn (k-nearest neighbours on pixels of the training split), knn-K,
    mlp (a multi-layer perceptron trained with standard training), or any model name"""
    images: int = 200
    """source test images (each gets a random target class other than its own)"""
    steps: int = 100
    """targeted PGD steps (step size 2.5 * eps / steps)"""
    bootstrap: int = 2000
    """bootstrap resamples of the 95% interval"""
    judge_epochs: int = 30
    """training epochs of a model judge"""


#: settings of Figure 1 that the study sets itself (its model, dataset, threat model, device)
_TIMING_SET_BY_STUDY = ("model", "dataset", "data_dir", "norm", "eps", "device")


@dataclass
class TimingSection(TimingSettings):
    """Figure 1 on this device: the settings of ``fastrobust timing``; the other settings of
    the timed run (epochs, validation, batch) are the first method's."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in _TIMING_SET_BY_STUDY:
            if getattr(self, name) is not None:
                raise ConfigError(
                    f"timing.{name} is set by the study; put it at the top level",
                    field=f"timing.{name}",
                )


@dataclass
class StudyConfig:
    """One study: dataset, model, threat model, methods, and what each stage does."""

    title: str = "fast adversarial training on digits"
    dataset: str = "digits"
    data_dir: str | None = None
    """folder of the dataset files (CIFAR python-version folder, image folder root)"""
    image_size: int | None = None
    model: str = "small_cnn"
    norm: str = "l2"
    eps: float = 1.0
    """training eps of every robust method"""
    seed: int = 0
    """seed of every run, evaluation, figure and score"""
    methods: list[MethodSpec] = field(
        default_factory=lambda: [parse_method(m, i) for i, m in enumerate(DEFAULT_METHODS)]
    )
    training: dict[str, Any] = field(default_factory=lambda: {"eval_every": 5})
    """TrainConfig keys shared by every method (epochs, batch_size, lr, schedule, ...);
    the default validates every 5 epochs, as the paper does"""
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    figures: FiguresSection = field(default_factory=FiguresSection)
    alignment: AlignmentSection = field(default_factory=AlignmentSection)
    timing: TimingSection = field(default_factory=TimingSection)
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    """stages to run (the report always comes last)"""
    certify: dict[str, Any] | None = None
    """certified L2 curves by randomized smoothing, run by the curves stage when given: keys of
    ``fastrobust certify``'s settings (sigma, n0, n, alpha, batch_size, limit, checks, ...;
    docs/certification.md); None: none"""

    def __post_init__(self) -> None:
        self.validate()

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` / :class:`DataError` on any bad value."""
        check_types(self, "")
        for key in ("evaluation", "figures", "alignment", "timing"):
            check_types(getattr(self, key), f"{key}.")
        for stage in self.stages:
            check_stage(stage)
        self.certify_settings()  # a bad certify key or value: one ConfigError
        if not self.methods:
            raise ConfigError("study config: list at least one method under 'methods'")
        labels = [m.label for m in self.methods]
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})
        if dup:
            raise ConfigError(f"study config: method label {dup[0]!r} is listed twice")
        for spec in self.methods:
            self.train_config(spec, out_dir=".")  # TrainConfig validates method and values
        if self.data_dir is not None and not Path(self.data_dir).expanduser().is_dir():
            raise DataError(f"study config: dataset folder {self.data_dir} does not exist")
        ev = self.evaluation
        if not ev.eps or any(not math.isfinite(e) or e < 0 for e in ev.eps):
            raise ConfigError("study config: evaluation.eps must be a list of numbers >= 0")
        if self.eps not in ev.eps:
            ev.eps = sorted([*ev.eps, self.eps])
        al = self.alignment
        if not al.budgets or any(not math.isfinite(b) or b <= 0 for b in al.budgets):
            raise ConfigError("study config: alignment.budgets must be numbers > 0")
        if not al.judges:
            raise ConfigError("study config: alignment.judges must name at least one judge")
        for judge in al.judges:
            parse_judge(judge)
        if min(al.images, al.steps, al.bootstrap, al.judge_epochs) < 1:
            raise ConfigError(
                "study config: alignment.images, steps, bootstrap, judge_epochs must be >= 1"
            )

    # -- derived ------------------------------------------------------------------------------
    def certify_settings(self) -> CertifySettings | None:
        """The settings of the study's certified curves (None: the config asks for none)."""
        if self.certify is None:
            return None
        if not isinstance(self.certify, dict):
            raise ConfigError("study config: certify must be a mapping of certify settings")
        own = {"dataset", "data_dir", "out", "device", "progress", "empirical", "arch"}
        given = sorted(set(self.certify) & own)
        if given:
            raise ConfigError(f"study config: certify.{given[0]} is set by the study")
        try:
            return CertifySettings(**{"seed": self.seed, **self.certify})
        except TypeError as exc:
            raise ConfigError(f"study config: certify: {exc}") from None

    def train_config(self, spec: MethodSpec, *, out_dir: str | Path) -> TrainConfig:
        """The TrainConfig of one method's run: shared values, then the method's own."""
        values = {
            **self.training,
            **spec.settings,
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "image_size": self.image_size,
            "model": spec.settings.get("model", self.model),
            "norm": self.norm,
            "eps": self.eps,
            "seed": self.seed,
            "out_dir": str(out_dir),
            "name": spec.label,
            "progress": False,
        }
        try:
            return TrainConfig.from_dict(values)
        except ConfigError as exc:
            raise ConfigError(f"study config: method {spec.label!r}: {exc}") from None

    def method(self, label: str) -> MethodSpec:
        for spec in self.methods:
            if spec.label == label:
                return spec
        raise ConfigError(f"the study has no method {label!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["methods"] = [{"label": m.label, **m.settings} for m in self.methods]
        return d

    # -- YAML -----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"study config: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}"
            )
        values = dict(data)
        sections = {
            "evaluation": EvaluationSection,
            "figures": FiguresSection,
            "alignment": AlignmentSection,
            "timing": TimingSection,
        }
        for key, section in sections.items():
            if key in values:
                values[key] = _section(section, key, values[key])
        if "methods" in values:
            methods = values["methods"]
            if not isinstance(methods, list):
                raise ConfigError("study config: methods must be a list")
            values["methods"] = [parse_method(m, i) for i, m in enumerate(methods)]
        if "training" in values:
            training = values["training"] or {}
            if not isinstance(training, dict):
                raise ConfigError("study config: training must be a mapping of TrainConfig keys")
            try:
                training = values["training"] = flatten(training)
            except ConfigError as exc:
                raise ConfigError(f"study config: training: {exc}") from None
        else:
            training = {}
        managed = sorted(set(training) & _MANAGED)
        if managed:
            raise ConfigError(
                f"study config: training.{managed[0]} is set by the study; "
                "put it at the top level (dataset, model, norm, eps, seed, ...)"
            )
        if "stages" in values and not isinstance(values["stages"], list):
            raise ConfigError("study config: stages must be a list")
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"study config: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> StudyConfig:
        """Read a study YAML; ``overrides`` (top-level keys, None: keep) take precedence."""
        data = read_yaml_mapping(path, "study config")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    def write_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


DEFAULT_METHODS: tuple[str, ...] = ("standard", "fast", "pgd-7")


def parse_method(entry: Any, index: int) -> MethodSpec:
    """A method entry: ``standard``, ``fast``, ``pgd-7`` (method pgd, 7 steps), or a mapping
    ``{label: ..., method: ..., <any TrainConfig key>: ...}``."""
    if isinstance(entry, str):
        name, _, steps = entry.rpartition("-")
        settings: dict[str, Any] = {"method": name}
        if steps.isdigit():
            settings["steps"] = int(steps)
        else:
            settings["method"] = entry
        return MethodSpec(entry, settings)
    if isinstance(entry, dict) and "method" in entry:
        settings = {k: v for k, v in entry.items() if k not in _STUDY_ONLY}
        managed = sorted(set(settings) & (_MANAGED - {"model"}))
        if managed:
            raise ConfigError(
                f"study config: methods[{index}]: {managed[0]} is set by the study, not per method"
            )
        label = str(entry.get("label") or entry["method"])
        return MethodSpec(label, settings)
    raise ConfigError(
        f"study config: methods[{index}] must be a method name (standard, fast, pgd-7, ...) "
        "or a mapping with a 'method' key"
    )


def check_stage(stage: str) -> str:
    """``stage`` if it is one of :data:`STAGES`, else a one-line ConfigError."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return stage


def parse_judge(name: str) -> tuple[str, int | str]:
    """``("knn", k)`` for ``knn`` / ``knn-K`` (k = 5 by default), else ``("model", name)``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"study config: a judge must be a name, got {name!r}")
    if name == "knn":
        return "knn", 5
    if name.startswith("knn-"):
        k = name[4:]
        if not k.isdigit() or int(k) < 1:
            raise ConfigError(f"study config: judge {name!r}: k must be an integer >= 1")
        return "knn", int(k)
    return "model", name


def _section(cls: type, key: str, value: Any, *, what: str = "study config") -> Any:
    """Section ``key`` of a config file (``what``: the file's kind in messages) as ``cls``."""
    if value is None:
        return cls()
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: {key} must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(
            f"{what}: unknown key {key}.{unknown[0]}; valid: {', '.join(sorted(known))}"
        )
    try:
        return cls(**value)
    except TypeError as exc:
        raise ConfigError(f"{what}: {key}: {exc}") from None
    except ConfigError as exc:  # a settings class's own check, naming its field
        text = str(exc)
        if exc.field:  # named as the file's key (autoattack.limit), not the class's section
            text = text.replace(exc.field.split(".")[0] + ".", f"{key}.", 1)
        # a key in a file, not a flag: no field, so the CLI does not render it as one
        raise ConfigError(f"{what}: {text}") from None


_SCALARS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
}


def _fits(value: Any, annotation: str) -> bool:
    """Does ``value`` fit a simple annotation (``int``, ``float | None``, ``list[str]``, ...)?"""
    options = [a.strip() for a in annotation.split("|")]
    for option in options:
        if option == "None" and value is None:
            return True
        if option.startswith("list[") and isinstance(value, list):
            return all(_fits(v, option[5:-1]) for v in value)
        kinds = _SCALARS.get(option)
        if kinds and isinstance(value, kinds) and (option == "bool" or not isinstance(value, bool)):
            return True
        if option not in _SCALARS and not option.startswith("list[") and option != "None":
            return True  # structured fields are checked where they are parsed
    return False


def check_types(section: Any, prefix: str) -> None:
    """One-line ConfigError for the first field of a config dataclass of the wrong type."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if not _fits(value, str(f.type)):
            raise ConfigError(f"study config: {prefix}{f.name} must be {f.type}, got {value!r}")


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping a study config or bench protocol YAML holds; a missing file, invalid YAML
    or another top-level type is one ConfigError naming ``what`` and the file."""
    p = Path(path).expanduser()
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{what} {p} does not exist") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{what} {p} is not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {p} must hold a mapping of keys to values")
    return data
