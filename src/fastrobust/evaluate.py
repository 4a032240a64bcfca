"""Robustness evaluation you can trust: accuracy-vs-eps curves, attack cascades, masking checks.

Goodwin et al. (HPEC 2020), Figure 2, plot adversarial accuracy against the perturbation size
for several models, evaluated with 20-step PGD, 10 random restarts and step size
``2.5 * eps / steps`` (Madry et al. 2018), a sample counting as robust only if no restart
fools it. :func:`robustness_curve` computes exactly that, only cheaper:

* A sample already fooled is never attacked again: not in later restarts, not by later
  attacks of a cascade (AutoAttack's ``robust`` mask, Croce & Hein 2020), and not at larger
  eps, since an adversarial example found at ``eps_i`` lies inside every larger ball. At
  ``eps_j > eps_i`` it only gets a projection check (the stored perturbation is inside the
  ``eps_j`` ball and ``[0,1]`` box) and one forward pass confirming it still fools the model.
* Random starts are drawn per chunk of samples from a generator seeded by
  ``(seed, chunk, eps index, attack index, restart)`` (:func:`seeded_starts`), and a sample
  uses its own row whether or not its neighbours are still attacked. So the result equals a
  plain loop that runs every restart on every sample at every eps with the same starts, a
  sample being robust at ``eps_j`` when no restart at any ``eps_i <= eps_j`` fooled it
  (``tests/test_evaluate.py`` compares the two).

Every curve comes with gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019,
"On evaluating adversarial robustness"; the AutoAttack sanity checks): the model outputs
logits and is deterministic, input gradients are not zero, the attack beats random noise of
the same norm, a very large eps drives accuracy to about zero, and accuracy does not rise
with eps or with more steps. Failed checks are warnings on the result (and in the report),
never silent.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastrobust.apgd import apgd
from fastrobust.attacks import BNMode, attack_mode, cross_entropy_per_sample, input_gradient, pgd
from fastrobust.data.base import ImageDataset, to_float
from fastrobust.errors import ConfigError, DataError
from fastrobust.threat import ThreatModel, threat_model

log = logging.getLogger(__name__)

#: attacks a curve can run, alone or as a cascade in the given order
ATTACKS = ("pgd", "apgd-ce", "apgd-dlr")

Model = Callable[[torch.Tensor], torch.Tensor]
Data = ImageDataset | tuple[torch.Tensor, torch.Tensor]


# -- inputs -----------------------------------------------------------------------------------
def parse_eps_list(text: str) -> list[float]:
    """``"0,0.25,0.5"`` (fractions such as ``8/255`` allowed) -> validated list of floats."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            num, _, den = part.partition("/")
            values.append(float(num) / float(den) if den else float(num))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"eps value {part!r} is not a number") from None
    return validate_eps_list(values)


def validate_eps_list(eps_list: Sequence[float]) -> list[float]:
    """A non-empty, finite, non-negative, strictly increasing list of floats (else ConfigError)."""
    values = [float(e) for e in eps_list]
    if not values:
        raise ConfigError("the eps list is empty; give e.g. --eps 0,0.25,0.5,1")
    bad = [e for e in values if not math.isfinite(e) or e < 0]
    if bad:
        raise ConfigError(f"eps values must be finite and >= 0, got {bad[0]:g}")
    for a, b in zip(values, values[1:]):
        if b <= a:
            raise ConfigError(
                f"eps values must be strictly increasing, got {a:g} before {b:g} "
                f"(e.g. {','.join(f'{e:g}' for e in sorted(set(values)))})"
            )
    return values


def validate_attacks(attacks: str | Sequence[str]) -> list[str]:
    """``"pgd,apgd-ce"`` or a sequence of names -> a list of known, distinct attack names."""
    names = [
        a.strip().lower() for a in (attacks.split(",") if isinstance(attacks, str) else attacks)
    ]
    names = [a for a in names if a]
    if not names:
        raise ConfigError(f"no attack given; choose from {', '.join(ATTACKS)}")
    for name in names:
        if name not in ATTACKS:
            raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"attack listed twice in {','.join(names)}")
    return names


def _data_tensors(data: Data, limit: int | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The (possibly limited) evaluation tensors and a description of where they come from."""
    if isinstance(data, ImageDataset):
        x, y = data.test_x, data.test_y
        info = {"dataset": data.name, "split": "test", "classes": list(data.classes)}
    elif isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
        info = {"dataset": None, "split": "given", "classes": None}
    else:
        raise ConfigError("data must be an ImageDataset or an (x, y) pair of tensors")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ConfigError("data must be an ImageDataset or an (x, y) pair of tensors")
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
        raise DataError(
            f"expected images N x C x H x W and N labels, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise DataError(f"images must be uint8 or floating point in [0,1], got {x.dtype}")
    available = len(y)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be >= 1, got {limit}")
        x, y = x[:limit], y[:limit]
    if len(y) == 0:
        raise DataError("no samples to evaluate")
    info.update(
        n=len(y), n_available=available, limit=limit if limit and limit < available else None
    )
    return x, y.long(), info


def describe_subset(data_info: dict) -> str:
    """``"first 100 of 360 test points"`` or ``"all 360 test points"``."""
    what = "test points" if data_info.get("split") == "test" else "given points"
    if data_info.get("limit"):
        return f"first {data_info['n']} of {data_info['n_available']} {what}"
    return f"all {data_info['n']} {what}"


def check_model_fits(
    model: Model, x: torch.Tensor, y: torch.Tensor, classes: list[str] | None
) -> int:
    """Raise DataError when the data is not what ``model`` was trained for (shape, classes).

    Returns the model's number of outputs.
    """
    info = getattr(model, "fastrobust_info", None) or {}
    spec = info.get("model_spec") or {}
    shape = tuple(x.shape[1:])
    if spec:
        want = (spec.get("in_channels"), spec.get("image_size"), spec.get("image_size"))
        if shape != want:
            raise DataError(
                f"the model takes {want[0]}x{want[1]}x{want[2]} images "
                f"(trained on {info.get('dataset')}), the data has {'x'.join(map(str, shape))}"
            )
        if classes is not None and spec.get("num_classes") != len(classes):
            raise DataError(
                f"the model has {spec.get('num_classes')} classes (trained on "
                f"{info.get('dataset')}), the data has {len(classes)}"
            )
    trained_classes = info.get("classes")
    if classes is not None and trained_classes and list(trained_classes) != list(classes):
        raise DataError(
            f"the model was trained on classes {_short(trained_classes)}, "
            f"the data has {_short(classes)}"
        )
    device = _model_device(model)
    probe = x[:1].to(device)
    probe = to_float(probe) if probe.dtype == torch.uint8 else probe
    module = model if isinstance(model, nn.Module) else None
    try:
        with attack_mode(module, "eval") if module else contextlib.nullcontext(), torch.no_grad():
            out = model(probe)
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[0][:160]
        raise DataError(
            f"the model does not accept {'x'.join(map(str, shape))} images ({msg})"
        ) from None
    if out.dim() != 2:
        raise DataError(
            f"the model must output one row of logits per sample, got shape {tuple(out.shape)}"
        )
    if int(y.max()) >= out.shape[1] or int(y.min()) < 0:
        raise DataError(f"labels go up to {int(y.max())} but the model has {out.shape[1]} outputs")
    return int(out.shape[1])


def _short(names: Sequence[str]) -> str:
    names = list(names)
    return ", ".join(names) if len(names) <= 6 else ", ".join(names[:5]) + f", ... ({len(names)})"


def _model_device(model: Model) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return torch.device("cpu")


# -- random starts and attacks ----------------------------------------------------------------
def start_seed(seed: int, chunk: int, eps_index: int, attack_index: int, restart: int) -> int:
    """The generator seed for one (chunk, eps, attack, restart) draw of random starts."""
    return _seed(seed, chunk, eps_index, attack_index, restart)


def _seed(*key: int) -> int:
    state = np.random.SeedSequence(list(key))
    return int(state.generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


def seeded_starts(
    threat: ThreatModel,
    x: torch.Tensor,
    *,
    seed: int,
    chunk: int,
    eps_index: int,
    attack_index: int,
    restart: int,
) -> torch.Tensor:
    """Random starts for a whole chunk ``x``; the curve gives row ``i`` to sample ``i``."""
    g = torch.Generator(device=x.device)
    g.manual_seed(start_seed(seed, chunk, eps_index, attack_index, restart))
    return threat.sample(x, generator=g)


class _GivenStart:
    """A threat model whose random start is given: every other method is the wrapped one's.

    This lets the curve hand :func:`fastrobust.pgd` and :func:`fastrobust.apgd.apgd` its
    per-sample seeded starts without a second copy of their loops.
    """

    def __init__(self, threat: ThreatModel, start: torch.Tensor) -> None:
        self._threat = threat
        self._start = start

    def sample(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape != self._start.shape:
            raise RuntimeError(f"given start {tuple(self._start.shape)} for input {tuple(x.shape)}")
        return self._start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._threat, name)


def run_attack(
    name: str,
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    start: torch.Tensor,
    *,
    steps: int,
    step_size_factor: float = 2.5,
    bn_mode: BNMode = "eval",
) -> torch.Tensor:
    """One run of attack ``name`` from the perturbation ``start``; returns a valid delta."""
    given: Any = _GivenStart(threat, start)
    if name == "pgd":
        alpha = step_size_factor * threat.eps / steps
        x_adv = pgd(model, x, y, given, steps=steps, step_size=alpha, bn_mode=bn_mode)
    elif name in ("apgd-ce", "apgd-dlr"):
        x_adv = apgd(model, x, y, given, steps=steps, loss=name[5:], bn_mode=bn_mode)  # type: ignore[arg-type]
    else:
        raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    return threat.project(x_adv - x, x)  # a buggy attack still cannot leave the threat model


def _fools(model: Model, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x + delta).argmax(1) != y


# -- the result -------------------------------------------------------------------------------
@dataclass
class Check:
    """One gradient-masking check: its name, whether it passed, what it saw."""

    name: str
    passed: bool
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "message": self.message, **self.values}


@dataclass
class RobustnessCurve:
    """Accuracy under attack at each eps, with how each sample was fooled and the checks."""

    norm: str
    eps: list[float]
    attacks: list[str]
    steps: int
    restarts: int
    step_size_factor: float
    random_start: str
    seed: int
    n: int
    clean_correct: int
    robust: list[int]
    """number of samples robust at each eps"""
    fooled_by: list[dict[str, int]]
    """per eps: samples misclassified clean, fooled at a smaller eps, or fooled by each attack"""
    robust_mask: torch.Tensor
    """``len(eps) x n`` booleans (CPU): is sample ``i`` robust at ``eps[j]``"""
    data: dict[str, Any]
    """dataset, split, n, n_available, limit"""
    model_info: dict[str, Any] = field(default_factory=dict)
    """what the model was trained with (method, norm, eps, dataset), when recorded"""
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    attack_gradients: int = 0
    """input gradients the curve computed, summed over samples (its attack cost)"""
    time_s: float = 0.0
    checks_time_s: float = 0.0

    @property
    def accuracy(self) -> list[float]:
        return [r / self.n for r in self.robust]

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct / self.n

    @property
    def warnings(self) -> list[str]:
        """Messages of the failed gradient-masking checks."""
        return [c.message for c in self.checks if not c.passed]

    @property
    def subset(self) -> str:
        return describe_subset(self.data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-sample mask)."""
        return {
            "norm": self.norm,
            "eps": self.eps,
            "accuracy": self.accuracy,
            "robust": self.robust,
            "clean_accuracy": self.clean_accuracy,
            "n": self.n,
            "subset": self.subset,
            "data": self.data,
            "attacks": self.attacks,
            "steps": self.steps,
            "restarts": self.restarts,
            "step_size": f"{self.step_size_factor:g}*eps/steps",
            "random_start": self.random_start,
            "seed": self.seed,
            "fooled_by": self.fooled_by,
            "trained": self.model_info,
            "checks": [c.to_dict() for c in self.checks],
            "warnings": self.warnings,
            "notes": self.notes,
            "attack_gradients": self.attack_gradients,
            "time_s": round(self.time_s, 3),
            "checks_time_s": round(self.checks_time_s, 3),
        }


# -- the curve --------------------------------------------------------------------------------
_CLEAN, _CARRIED = -2, -1
_CHECKS_STREAM = (
    2**31
)  # seeds of the checks' random draws, apart from the curve's  # codes of ``how``: misclassified clean, fooled at a smaller eps


@dataclass
class _Chunk:
    robust: torch.Tensor  # E x B bool
    how: torch.Tensor  # E x B int: _CLEAN, _CARRIED, attack index, or len(attacks) if robust
    clean_correct: torch.Tensor  # B bool
    gradients: int
    unstable: int  # carried adversarial examples that no longer fooled the model


def _curve_chunk(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    eps_list: list[float],
    attacks: list[str],
    *,
    steps: int,
    restarts: int,
    step_size_factor: float,
    seed: int,
    chunk: int,
    bn_mode: BNMode,
    bar: Any,
) -> _Chunk:
    n = len(y)
    robust_code = len(attacks)
    with torch.no_grad():
        clean_correct = model(x).argmax(1) == y
    fooled = ~clean_correct
    delta = torch.zeros_like(x)  # the adversarial perturbation of every fooled sample
    how = torch.full((len(eps_list), n), robust_code, dtype=torch.long, device=x.device)
    robust = torch.zeros(len(eps_list), n, dtype=torch.bool, device=x.device)
    gradients = unstable = 0
    for j, eps in enumerate(eps_list):
        t = threat.with_eps(eps)
        how[j, ~clean_correct] = _CLEAN
        carried = (fooled & clean_correct).nonzero().squeeze(1)
        if carried.numel():  # the projection check: inside the larger ball, still fooling
            xc, dc = x[carried], delta[carried]
            ok = t.contains(dc, xc) & _fools(model, xc, dc, y[carried])
            fooled[carried[~ok]] = False
            unstable += int((~ok).sum())
            how[j, carried[ok]] = _CARRIED
        if eps > 0:
            for a, name in enumerate(attacks):
                for r in range(restarts):
                    active = (~fooled).nonzero().squeeze(1)
                    if active.numel() == 0:
                        break
                    bar.set_postfix_str(
                        f"eps {eps:g} {name} restart {r + 1}/{restarts}", refresh=True
                    )
                    start = seeded_starts(
                        t, x, seed=seed, chunk=chunk, eps_index=j, attack_index=a, restart=r
                    )[active]
                    xa, ya = x[active], y[active]
                    d = run_attack(
                        name,
                        model,
                        xa,
                        ya,
                        t,
                        start,
                        steps=steps,
                        step_size_factor=step_size_factor,
                        bn_mode=bn_mode,
                    )
                    gradients += steps * active.numel()
                    hit = _fools(model, xa, d, ya)
                    fooled[active[hit]] = True
                    delta[active[hit]] = d[hit]
                    how[j, active[hit]] = a
        robust[j] = ~fooled
        bar.update(n)
    return _Chunk(robust, how, clean_correct, gradients, unstable)


def robustness_curve(
    model: Model,
    data: Data,
    threat_name: str | ThreatModel,
    eps_list: Sequence[float],
    *,
    steps: int = 20,
    restarts: int = 10,
    step_size_factor: float = 2.5,
    attacks: str | Sequence[str] = ("pgd",),
    random_start: str | None = None,
    limit: int | None = None,
    batch_size: int = 500,
    seed: int = 0,
    device: str | torch.device | None = None,
    bn_mode: BNMode = "eval",
    checks: bool = True,
    check_size: int = 64,
    progress: bool = False,
    label: str = "eval",
) -> RobustnessCurve:
    """Adversarial accuracy at each eps of ``eps_list`` (Goodwin et al. 2020, Figure 2).

    A sample counts as robust at ``eps`` only if it is classified correctly and no restart of
    any attack (``pgd``, ``apgd-ce``, ``apgd-dlr``, run as a cascade in the given order), at
    this eps or a smaller one, fools it. Defaults are the paper's evaluation: 20-step PGD,
    10 random restarts, step size ``2.5 * eps / steps``.

    ``data`` is an :class:`ImageDataset` (its test split) or ``(x, y)`` tensors (uint8, or
    floats in ``[0,1]``); ``limit`` keeps the first N samples. ``threat_name`` is ``l2`` or
    ``linf`` (or a :class:`ThreatModel`, whose random start is then used). Attack work runs
    only on still-robust samples; see the module docstring for why the result is nonetheless
    the same as the plain loop's. With ``checks`` the gradient-masking checks run on up to
    ``check_size`` samples each and are returned in ``.checks`` / ``.warnings``.
    """
    eps_values = validate_eps_list(eps_list)
    attack_names = validate_attacks(attacks)
    if steps < 1 or restarts < 1:
        raise ConfigError(f"need steps >= 1 and restarts >= 1, got {steps} and {restarts}")
    if step_size_factor <= 0 or batch_size < 1 or check_size < 1:
        raise ConfigError("step_size_factor, batch_size and check_size must be positive")
    if isinstance(threat_name, ThreatModel):
        random_start = random_start or threat_name.random_start
        threat_name = threat_name.name
    base = threat_model(threat_name, eps_values[-1], random_start=random_start)
    x_all, y_all, data_info = _data_tensors(data, limit)
    dev = torch.device(device) if device is not None else _model_device(model)
    outputs = check_model_fits(model, x_all, y_all, data_info.get("classes"))
    info = getattr(model, "fastrobust_info", None) or {}
    model_info = {k: info.get(k) for k in ("method", "norm", "eps", "dataset") if k in info}
    if "apgd-dlr" in attack_names and outputs < 3:
        raise ConfigError("apgd-dlr needs a model with at least 3 classes")

    from tqdm.auto import tqdm

    n = len(y_all)
    started = time.perf_counter()
    chunks: list[_Chunk] = []
    module = model if isinstance(model, nn.Module) else None
    with (
        attack_mode(module, bn_mode) if module is not None else contextlib.nullcontext(),
        tqdm(
            total=n * len(eps_values),
            desc=label,
            unit="pt",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        ) as bar,
    ):
        for c, lo in enumerate(range(0, n, batch_size)):
            x = _as_float(x_all[lo : lo + batch_size].to(dev))
            y = y_all[lo : lo + batch_size].to(dev)
            chunks.append(
                _curve_chunk(
                    model,
                    x,
                    y,
                    base,
                    eps_values,
                    attack_names,
                    steps=steps,
                    restarts=restarts,
                    step_size_factor=step_size_factor,
                    seed=seed,
                    chunk=c,
                    bn_mode=bn_mode,
                    bar=bar,
                )
            )
        robust = torch.cat([ch.robust for ch in chunks], 1).cpu()
        how = torch.cat([ch.how for ch in chunks], 1).cpu()
        clean_correct = torch.cat([ch.clean_correct for ch in chunks]).cpu()
        curve = RobustnessCurve(
            norm=base.name,
            eps=eps_values,
            attacks=attack_names,
            steps=steps,
            restarts=restarts,
            step_size_factor=step_size_factor,
            random_start=base.random_start,
            seed=seed,
            n=n,
            clean_correct=int(clean_correct.sum()),
            robust=[int(r) for r in robust.sum(1)],
            fooled_by=[_fooled_counts(row, attack_names) for row in how],
            robust_mask=robust,
            data={k: v for k, v in data_info.items() if k != "classes"},
            model_info=model_info,
            attack_gradients=sum(ch.gradients for ch in chunks),
        )
        unstable = sum(ch.unstable for ch in chunks)
        curve.time_s = time.perf_counter() - started
        if checks:
            started = time.perf_counter()
            bar.set_postfix_str("masking checks", refresh=True)
            ctx = _CheckContext(
                model,
                x_all,
                y_all,
                base,
                curve,
                how,
                clean_correct,
                dev,
                batch_size,
                bn_mode,
                check_size,
                seed,
            )
            curve.checks = ctx.run_all(unstable)
            curve.checks_time_s = time.perf_counter() - started
    trained_norm, trained_eps = model_info.get("norm"), model_info.get("eps")
    if trained_norm and trained_norm != base.name and model_info.get("method") != "standard":
        eps_text = f"{trained_eps:g}" if isinstance(trained_eps, int | float) else trained_eps
        curve.notes.append(
            f"trained against {trained_norm} eps {eps_text}, evaluated under {base.name}"
        )
    for message in curve.warnings:
        log.warning("%s: %s", label, message)
    return curve


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return to_float(x) if x.dtype == torch.uint8 else x


def _fooled_counts(how_row: torch.Tensor, attacks: list[str]) -> dict[str, int]:
    counts = {
        "clean": int((how_row == _CLEAN).sum()),
        "smaller_eps": int((how_row == _CARRIED).sum()),
    }
    for a, name in enumerate(attacks):
        counts[name] = int((how_row == a).sum())
    return counts


# -- gradient-masking checks ------------------------------------------------------------------
#: largest share of clean-correct samples allowed a zero input gradient
ZERO_GRAD_TOLERANCE = 0.01
#: largest accuracy allowed at an eps that covers the whole image box
LARGE_EPS_TOLERANCE = 0.05


def _slack(n: int, share: float) -> int:
    """Samples a check may miss by: one, or ``share`` of them where that is more."""
    return max(1, int(share * n))


class _CheckContext:
    """The data a curve's masking checks share; ``run_all`` returns every :class:`Check`."""

    def __init__(
        self,
        model: Model,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        curve: RobustnessCurve,
        how: torch.Tensor,
        clean_correct: torch.Tensor,
        device: torch.device,
        batch_size: int,
        bn_mode: BNMode,
        check_size: int,
        seed: int,
    ) -> None:
        self.model, self.x, self.y, self.threat, self.curve = model, x, y, threat, curve
        self.how, self.clean_correct, self.device = how, clean_correct, device
        self.batch_size, self.bn_mode, self.check_size, self.seed = (
            batch_size,
            bn_mode,
            check_size,
            seed,
        )

    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _as_float(self.x[idx].to(self.device)), self.y[idx].to(self.device)

    def _generator(self, *key: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(_seed(self.seed, _CHECKS_STREAM, *key))
        return g

    def _attack_robust(
        self, idx: torch.Tensor, threat: ThreatModel, steps: int, key: int, restarts: int = 1
    ) -> int:
        """Samples of ``idx`` still robust after ``restarts`` PGD runs (each on the survivors)."""
        x, y = self._batch(idx)
        fooled = _fools(self.model, x, torch.zeros_like(x), y)
        for r in range(restarts):
            active = (~fooled).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            start = threat.sample(x, generator=self._generator(key, r, 0))[active]
            d = run_attack(
                "pgd",
                self.model,
                x[active],
                y[active],
                threat,
                start,
                steps=steps,
                step_size_factor=self.curve.step_size_factor,
                bn_mode=self.bn_mode,
            )
            fooled[active] |= _fools(self.model, x[active], d, y[active])
        return int((~fooled).sum())

    def run_all(self, unstable: int) -> list[Check]:
        with torch.no_grad():
            x0, _ = self._batch(torch.arange(min(len(self.y), self.batch_size)))
            out = self.model(x0)
            again = self.model(x0)
        correct = self.clean_correct.nonzero().squeeze(1)
        return [
            self.logits(out),
            self.deterministic(out, again, unstable),
            self.gradients(correct),
            self.noise(),
            self.monotone_eps(),
            self.monotone_steps(correct[: self.check_size]),
            self.large_eps(correct[: self.check_size]),
        ]

    def logits(self, out: torch.Tensor) -> Check:
        """Attacks need logits: probabilities (rows summing to 1) flatten the loss surface."""
        sums = out.sum(1)
        probs = bool((out >= 0).all() and torch.allclose(sums, torch.ones_like(sums), atol=1e-4))
        message = (
            "the model outputs probabilities (rows are non-negative and sum to 1): attacks need "
            "logits; remove the final softmax"
            if probs
            else "the model outputs logits"
        )
        return Check("logits", not probs, message)

    def deterministic(self, out: torch.Tensor, again: torch.Tensor, unstable: int) -> Check:
        """A randomised model (dropout at test time, random defences) needs EOT attacks."""
        same = torch.equal(out, again) and unstable == 0
        message = (
            "the model is not deterministic (the same input gave different outputs, or "
            f"{unstable} adversarial examples stopped fooling it): results from plain PGD are "
            "unreliable; attack with expectation over transformation"
            if not same
            else "the model is deterministic"
        )
        return Check("deterministic", same, message, {"unstable_examples": unstable})

    def gradients(self, correct: torch.Tensor) -> Check:
        """Zero input gradients (saturated softmax, non-differentiable layers) stall PGD."""
        zero = total = 0
        for lo in range(0, len(correct), self.batch_size):
            x, y = self._batch(correct[lo : lo + self.batch_size])
            grad, _, _ = input_gradient(self.model, x, y, cross_entropy_per_sample)
            zero += int((grad.flatten(1).abs().amax(1) == 0).sum())
            total += len(y)
        share = zero / max(total, 1)
        ok = share <= ZERO_GRAD_TOLERANCE
        message = (
            f"{zero} of {total} correctly classified samples have an exactly zero input gradient "
            "(saturated softmax or a non-differentiable layer): gradient attacks cannot move "
            "them; try --attack apgd-dlr, whose loss does not saturate"
            if not ok
            else f"input gradients are non-zero ({zero} of {total} zero)"
        )
        return Check("gradients", ok, message, {"zero_gradients": zero, "checked": total})

    def noise(self) -> Check:
        """The attack must fool at least as many samples as random noise of the same norm."""
        noisy = type(self.threat)(1.0, random_start="sphere")
        worse = []
        noise_acc = []
        for j, eps in enumerate(self.curve.eps):
            if eps == 0:
                noise_acc.append(self.curve.clean_accuracy)
                continue
            t = noisy.with_eps(eps)
            robust = 0
            for lo in range(0, len(self.y), self.batch_size):
                x, y = self._batch(torch.arange(lo, min(lo + self.batch_size, len(self.y))))
                d = t.sample(x, generator=self._generator(1, j, lo))
                robust += int((~_fools(self.model, x, d, y)).sum())
            noise_acc.append(robust / self.curve.n)
            if self.curve.robust[j] > robust:
                worse.append(
                    f"{eps:g} ({self.curve.accuracy[j]:.3f} > {robust / self.curve.n:.3f})"
                )
        ok = not worse
        message = (
            "the attack is weaker than random noise of the same norm at eps "
            + ", ".join(worse)
            + ": its gradients mislead it (gradient masking?)"
            if not ok
            else "the attack beats random noise of the same norm at every eps"
        )
        return Check("noise", ok, message, {"noise_accuracy": noise_acc})

    def monotone_eps(self) -> Check:
        """Samples fooled at one eps must also be fooled by a fresh attack at the next eps.

        The curve itself is monotone by construction (carried examples); this re-attacks up to
        ``check_size`` of the samples first fooled at ``eps_{j-1}`` at ``eps_j``, with the same
        restarts. Survivors mean a plain evaluation would see accuracy rise with eps.
        """
        survivors = checked = 0
        where = []
        attacked = (self.how >= 0) & (self.how < len(self.curve.attacks))
        for j in range(1, len(self.curve.eps)):
            if self.curve.eps[j - 1] == 0:
                continue
            idx = attacked[j - 1].nonzero().squeeze(1)[: self.check_size]
            if idx.numel() == 0:
                continue
            t = self.threat.with_eps(self.curve.eps[j])
            left = self._attack_robust(
                idx, t, self.curve.steps, key=2 + j, restarts=self.curve.restarts
            )
            survivors += left
            checked += idx.numel()
            if left:
                where.append(f"{left} of {idx.numel()} at eps {self.curve.eps[j]:g}")
        ok = survivors <= (_slack(checked, 0.05) if checked else 0)
        message = (
            "samples fooled at a smaller eps survived a fresh attack at a larger one ("
            + "; ".join(where)
            + "): accuracy would rise with eps in a plain evaluation (step size too large, or "
            "gradient masking)"
            if not ok
            else f"a fresh attack at the next eps fools the samples fooled before ({survivors} of {checked} survived)"
        )
        return Check("monotone_eps", ok, message, {"survivors": survivors, "checked": checked})

    def monotone_steps(self, idx: torch.Tensor) -> Check:
        """Doubling the PGD steps (same start) must not raise accuracy."""
        positive = [j for j, e in enumerate(self.curve.eps) if e > 0]
        if idx.numel() == 0 or not positive:
            return Check("monotone_steps", True, "skipped (no eps > 0 or no correct samples)")
        half = self.curve.clean_accuracy / 2
        j = min(positive, key=lambda i: abs(self.curve.accuracy[i] - half))
        t = self.threat.with_eps(self.curve.eps[j])
        steps = self.curve.steps
        base = self._attack_robust(idx, t, steps, key=100 + j)
        more = self._attack_robust(idx, t, 2 * steps, key=100 + j)
        ok = more <= base + _slack(idx.numel(), 0.02)
        values = {
            "eps": self.curve.eps[j],
            "checked": idx.numel(),
            f"robust_{steps}_steps": base,
            f"robust_{2 * steps}_steps": more,
        }
        message = (
            f"accuracy rose with more steps at eps {self.curve.eps[j]:g} ({base} robust of "
            f"{idx.numel()} with {steps} steps, {more} with {2 * steps}): the attack has not "
            "converged or the gradients are unreliable"
            if not ok
            else f"more steps do not raise accuracy ({base} -> {more} robust of {idx.numel()})"
        )
        return Check("monotone_steps", ok, message, values)

    def large_eps(self, idx: torch.Tensor) -> Check:
        """At an eps covering the whole ``[0,1]`` box any image is reachable: accuracy ~ 0."""
        if idx.numel() == 0:
            return Check("large_eps", True, "skipped (no correctly classified samples)")
        dim = self.x[0].numel()
        big = math.sqrt(dim) if self.threat.name == "l2" else 1.0
        left = self._attack_robust(idx, self.threat.with_eps(big), self.curve.steps, key=200)
        acc = left / idx.numel()
        ok = acc <= LARGE_EPS_TOLERANCE or left <= 1
        message = (
            f"at eps {big:g}, which covers the whole image box, {left} of {idx.numel()} samples "
            "stay correct: the attack cannot follow the gradients (gradient masking?)"
            if not ok
            else f"a very large eps ({big:g}) drives accuracy to {acc:.3f}"
        )
        return Check("large_eps", ok, message, {"eps": big, "robust": left, "checked": idx.numel()})


# -- reports ----------------------------------------------------------------------------------
def format_table(curves: dict[str, RobustnessCurve]) -> str:
    """Rows eps, columns models: the text table the CLI prints."""
    labels = list(curves)
    first = curves[labels[0]]
    width = max(8, *(len(label) for label in labels))
    head = f"{'eps':>8}  " + "  ".join(f"{label:>{width}}" for label in labels)
    lines = [head]
    if 0 not in first.eps:
        clean = "  ".join(f"{c.clean_accuracy:>{width}.4f}" for c in curves.values())
        lines.append(f"{'clean':>8}  {clean}")
    for j, eps in enumerate(first.eps):
        lines.append(
            f"{eps:>8g}  " + "  ".join(f"{c.accuracy[j]:>{width}.4f}" for c in curves.values())
        )
    return "\n".join(lines)


def describe_attack(curve: RobustnessCurve) -> str:
    """``"l2 pgd, 20 steps x 10 restarts (step 2.5*eps/steps, start ball)"``."""
    return (
        f"{curve.norm} {' -> '.join(curve.attacks)}, {curve.steps} steps x {curve.restarts} "
        f"restarts (pgd step {curve.step_size_factor:g}*eps/steps, {curve.random_start} start)"
    )


def write_report(
    out_dir: str | Path, curves: dict[str, RobustnessCurve], *, extra: dict | None = None
) -> dict[str, Path]:
    """Write ``robustness.json``, ``robustness.csv`` and ``robustness.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(curves.values()))
    paths = {
        "json": out / "robustness.json",
        "csv": out / "robustness.csv",
        "png": out / "robustness.png",
    }
    doc = {
        "subset": first.subset,
        "data": first.data,
        "norm": first.norm,
        "eps": first.eps,
        "attack": describe_attack(first),
        **(extra or {}),
        "models": {label: c.to_dict() for label, c in curves.items()},
    }
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["model", "norm", "eps", "accuracy", "robust", "n", "subset", "attack", "warnings"]
        )
        for label, c in curves.items():
            for j, eps in enumerate(c.eps):
                w.writerow(
                    [
                        label,
                        c.norm,
                        f"{eps:g}",
                        f"{c.accuracy[j]:.6f}",
                        c.robust[j],
                        c.n,
                        c.subset,
                        describe_attack(c),
                        len(c.warnings),
                    ]
                )
    plot_curves(curves, paths["png"])
    return paths


def plot_curves(curves: dict[str, RobustnessCurve], path: str | Path) -> None:
    """Accuracy vs eps, one line per model, each model's training eps as a dotted line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    ax = fig.add_subplot()
    first = next(iter(curves.values()))
    for label, c in curves.items():
        (line,) = ax.plot(c.eps, c.accuracy, marker="o", label=label)
        trained = c.model_info
        if (
            trained.get("method") not in (None, "standard")
            and trained.get("norm") == c.norm
            and trained.get("eps") is not None
        ):
            ax.axvline(
                float(trained["eps"]),
                linestyle=":",
                color=line.get_color(),
                label=f"{label} training eps",
            )
    ax.set_xlabel(f"{first.norm} eps")
    ax.set_ylabel("adversarial accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    dataset = first.data.get("dataset") or "data"
    ax.set_title(f"{dataset}, {first.subset}\n{describe_attack(first)}", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
