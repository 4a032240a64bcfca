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

The checks live in :mod:`fastrobust.evaluation.masking`, the seeded starts and attack runs in
:mod:`fastrobust.attacks.restarts`, the table, JSON/CSV files and plot in :mod:`fastrobust.evaluation.report`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastrobust.attacks.projected_gradient import BNMode, attack_mode
from fastrobust.attacks.restarts import (  # noqa: F401  (start_seed: re-exported)
    ATTACKS,
    Model,
    _as_float,
    _fools,
    run_attack,
    seeded_starts,
    start_seed,
)
from fastrobust.attacks.threat import ThreatModel, threat_model
from fastrobust.data.base import ImageDataset, to_float
from fastrobust.data.imagefolder import LazyImages
from fastrobust.errors import ConfigError, DataError
from fastrobust.evaluation.masking import (  # noqa: F401  (tolerances: re-exported)
    LARGE_EPS_TOLERANCE,
    ZERO_GRAD_TOLERANCE,
    Check,
    _CheckContext,
)
from fastrobust.evaluation.report import (  # noqa: F401  (re-exported: fastrobust.evaluation.curve.write_report)
    describe_attack,
    format_table,
    plot_curves,
    write_report,
)

log = logging.getLogger(__name__)

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
    if not isinstance(x, torch.Tensor | LazyImages) or not isinstance(y, torch.Tensor):
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


# -- the result -------------------------------------------------------------------------------
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
_CLEAN, _CARRIED = -2, -1  # codes of ``how``: misclassified clean, fooled at a smaller eps


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


def _fooled_counts(how_row: torch.Tensor, attacks: list[str]) -> dict[str, int]:
    counts = {
        "clean": int((how_row == _CLEAN).sum()),
        "smaller_eps": int((how_row == _CARRIED).sum()),
    }
    for a, name in enumerate(attacks):
        counts[name] = int((how_row == a).sum())
    return counts
