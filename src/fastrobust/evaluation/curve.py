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
  ``(seed, chunk, eps index, attack index, restart)``
  (:class:`fastrobust.attacks.registry.SeededRuns`), and a sample
  uses its own row whether or not its neighbours are still attacked. So the result equals a
  plain loop that runs every restart on every sample at every eps with the same starts, a
  sample being robust at ``eps_j`` when no restart at any ``eps_i <= eps_j`` fooled it
  (``tests/evaluation/test_curve.py`` compares the two).

AutoAttack (Croce & Hein 2020; ``attacks="autoattack"``: APGD-CE, APGD-T, FAB-T, Square with
their budgets) runs as the same cascade over the whole grid: each attack sees only the points
still robust at this eps, a point fooled at a smaller eps is not attacked again, and FAB-T,
which returns minimal perturbations, runs once per chunk (at the first eps where the cascade
reaches it, on the points then still robust) and settles every larger eps from the norms it
found: a point is fooled by FAB-T at ``eps`` when its perturbation is ``<= eps``. Square, when
it ends the cascade, runs after the other attacks have gone through the grid, on every
``(point, eps)`` pair still robust with its whole query budget, several eps sharing a batch
with one radius per row (``ThreatModel.per_row``; docs/evaluation.md, "AutoAttack").

Every curve comes with gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019,
"On evaluating adversarial robustness"; the AutoAttack sanity checks): the model outputs
logits and is deterministic, input gradients are not zero, the attack beats random noise of
the same norm, a very large eps drives accuracy to about zero, and accuracy does not rise
with eps or with more steps. Failed checks are warnings on the result (and in the report),
never silent.

The inputs are validated in :mod:`fastrobust.evaluation.inputs`, the checks live in
:mod:`fastrobust.evaluation.masking`, restarts in :mod:`fastrobust.attacks.restarts`, the result
types in :mod:`fastrobust.evaluation.results` and the table, JSON/CSV files and plot in
:mod:`fastrobust.evaluation.report` (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import torch

from fastrobust.attacks.contract import (
    Model,
    attack_mode,
    fools,
    looks_like_probabilities,
)
from fastrobust.attacks.registry import VERSIONS, RunSettings, SeededRuns, attack_spec
from fastrobust.attacks.restarts import worst_case_over_restarts
from fastrobust.attacks.threat import ThreatModel, threat_model
from fastrobust.data.disk_loader import WORKERS, decoded_batches, head
from fastrobust.errors import ConfigError, DataError
from fastrobust.evaluation.inputs import Data, as_float_images, data_tensors, validate_eps_list
from fastrobust.evaluation.masking import CheckInputs, run_checks
from fastrobust.evaluation.results import RobustnessCurve
from fastrobust.evaluation.settings import RESTARTS, STEPS, CurveSettings
from fastrobust.kernels import kernel_settings
from fastrobust.model_info import ModelInfo, check_model_fits, model_device, model_info

log = logging.getLogger(__name__)


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
    settings: RunSettings,
    restarts: int,
    seed: int,
    chunk: int,
    bar: Any,
) -> _Chunk:
    n = len(y)
    robust_code = len(attacks)
    joint = _joint_suffix(attacks) if len(eps_list) > 1 else 0
    per_eps = attacks[: len(attacks) - joint]  # the rest run once over the whole grid
    with torch.no_grad():
        clean_correct = model(x).argmax(1) == y
    fooled = ~clean_correct
    delta = torch.zeros_like(x)  # the adversarial perturbation of every fooled sample
    how = torch.full((len(eps_list), n), robust_code, dtype=torch.long, device=x.device)
    gradients = unstable = 0
    minimal: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (delta, norm) per sample
    for j, eps in enumerate(eps_list):
        t = threat.with_eps(eps)
        how[j, ~clean_correct] = _CLEAN
        carried = (fooled & clean_correct).nonzero().squeeze(1)
        if carried.numel():  # the projection check: inside the larger ball, still fooling
            xc, dc = x[carried], delta[carried]
            ok = t.contains(dc, xc) & fools(model, xc, dc, y[carried])
            fooled[carried[~ok]] = False
            unstable += int((~ok).sum())
            how[j, carried[ok]] = _CARRIED
        if eps > 0:
            for a, name in enumerate(per_eps):
                if attack_spec(name).minimal is not None:
                    bar.set_postfix_str(f"eps {eps:g} {name}", refresh=True)
                    found, spent = _minimal_norms(
                        name, model, x, y, t, settings, fooled, minimal.get(name)
                    )
                    minimal[name] = found
                    gradients += spent
                    hit = ~fooled & (found[1] >= 0) & (found[1] <= eps)
                    delta[hit] = t.project(found[0][hit], x[hit])
                    hit[hit.clone()] = fools(model, x[hit], delta[hit], y[hit])
                else:
                    runs = restarts if attack_spec(name).restartable else 1
                    run_once = SeededRuns(
                        name, model, x, y, t, key=(seed, chunk, j, a), settings=settings,
                        on_restart=partial(_show_restart, bar, f"eps {eps:g} {name}", runs),
                    )  # fmt: skip
                    worst = worst_case_over_restarts(run_once, x, runs, fooled=fooled)
                    gradients += run_once.gradients
                    hit = worst.fooled & ~fooled
                    delta[hit] = worst.delta[hit]
                fooled = fooled | hit
                how[j, hit] = a
        if not joint:
            bar.update(n)
    for a in range(len(per_eps), len(attacks)):
        on_grid, spent = _over_the_grid(
            model, x, y, threat, eps_list, how == robust_code, attacks[a],
            settings=settings, key=(seed, chunk, len(eps_list), a), bar=bar,
        )  # fmt: skip
        gradients += spent
        first = on_grid.int().cummax(0).values.bool()  # fooled by it here or at a smaller eps
        at_first = on_grid & (first.int().cumsum(0) == 1)
        how[at_first] = a
        # at every larger eps the point counts as fooled at a smaller eps, as in a cascade run
        # eps by eps (where it would not have been attacked there at all)
        how[first & ~at_first & (how >= 0)] = _CARRIED
    if joint:
        bar.update(n * len(eps_list))
    return _Chunk(how == robust_code, how, clean_correct, gradients, unstable)


def _joint_suffix(attacks: list[str]) -> int:
    """How many attacks at the end of the cascade take one radius per row
    (:attr:`~fastrobust.attacks.spec.AttackSpec.per_row_eps`) and so run once over the grid."""
    count = 0
    while count < len(attacks) and attack_spec(attacks[len(attacks) - 1 - count]).per_row_eps:
        count += 1
    return count


def _over_the_grid(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    eps_list: list[float],
    robust: torch.Tensor,
    name: str,
    *,
    settings: RunSettings,
    key: tuple[int, ...],
    bar: Any,
) -> tuple[torch.Tensor, int]:
    """Runs of ``name`` over every ``(point, eps)`` pair still robust (``robust``: E x B).

    The pairs of several eps share a batch with one radius per row (``ThreatModel.per_row``),
    so each query or step is one forward pass for them all; each pair gets the attack's whole
    budget inside its own ball, as a run at that eps alone would. The eps are packed into
    batches no larger than the largest single eps's (:func:`_pack`). Returns the pairs it
    fooled (E x B, each confirmed by a forward pass of its projected perturbation) and the
    input gradients spent. ``key`` is ``(seed, chunk, eps slot, attack index)``; batch ``b``
    draws from the eps slot ``key[2] + b``.
    """
    eps = torch.tensor(eps_list, dtype=x.dtype, device=x.device)
    robust = robust & (eps > 0)[:, None]
    found = torch.zeros_like(robust)
    spent = 0
    for b, group in enumerate(_pack([int(c) for c in robust.sum(1)])):
        at, point = robust[group].nonzero(as_tuple=True)
        at = torch.tensor(group, device=x.device)[at]
        bar.set_postfix_str(
            f"{name} at eps {', '.join(f'{eps_list[j]:g}' for j in group)} ({point.numel()} pairs)",
            refresh=True,
        )
        seeds = (key[0], key[1], key[2] + b, *key[3:])
        run_once = SeededRuns(
            name, model, x[point], y[point], threat.per_row(eps[at]), key=seeds, settings=settings
        )
        worst = worst_case_over_restarts(run_once, x[point], 1)  # per-row-eps attacks run once
        found[at, point] = worst.fooled
        spent += run_once.gradients
    return found, spent


def _pack(sizes: list[int]) -> list[list[int]]:
    """Eps indices grouped into batches of at most ``max(sizes)`` pairs (first fit, largest
    first; empty eps left out). Never larger than the largest single-eps run: measured on a
    2-core CPU (small_cnn, digits), one batch of every pair was up to 1.1x slower per row than
    separate runs (the activations outgrow the cache), while packing the small eps into one
    batch saved their per-query overhead (0.95x of separate runs)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for j in sorted((j for j, c in enumerate(sizes) if c), key=lambda j: -sizes[j]):
        for b, left in enumerate(room):
            if sizes[j] <= left:
                bins[b].append(j)
                room[b] -= sizes[j]
                break
        else:
            bins.append([j])
            room.append(max(sizes) - sizes[j])
    return [sorted(group) for group in bins]


def _minimal_norms(
    name: str,
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    settings: RunSettings,
    fooled: torch.Tensor,
    known: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
    """Minimal perturbations of the minimum-norm attack ``name`` for the whole chunk.

    Runs only on the robust samples it has not run on yet (usually all of them at the first
    eps that reaches it, then none), stopping a sample once its perturbation is within this
    eps, the smallest one still open to it. Returns ``((delta, norm), gradients spent)``.
    """
    if known is None:  # norm -1: not attacked yet
        known = torch.zeros_like(x), torch.full((len(y),), -1.0, dtype=x.dtype, device=x.device)
    delta, norm = known
    todo = (~fooled & (norm < 0)).nonzero().squeeze(1)
    if todo.numel() == 0:
        return (delta, norm), 0
    eps = cast(float, threat.eps)  # one radius: the cascade runs one eps at a time
    enough = torch.full((todo.numel(),), eps, dtype=x.dtype, device=x.device)
    spec = attack_spec(name)
    assert spec.minimal is not None  # the cascade calls this for minimal attacks only
    found = spec.minimal(model, x[todo], y[todo], threat, settings, enough)
    delta, norm = delta.clone(), norm.clone()
    delta[todo], norm[todo] = found.delta, found.norm
    return (delta, norm), spec.gradients(settings) * todo.numel()


def _show_restart(bar: Any, what: str, restarts: int, restart: int) -> None:
    bar.set_postfix_str(f"{what} restart {restart + 1}/{restarts}", refresh=True)


@dataclass(frozen=True)
class CurveRun:
    """How one curve runs beyond its settings (internal to :mod:`fastrobust.evaluation`)."""

    device: str | torch.device | None = None
    """where the attacks run (None: the model's device)"""
    progress: bool = False
    label: str = "eval"
    """the model's name in the progress bar and the log lines"""
    first_chunk: int = 0
    """the chunks are numbered from here in the random-start keys: points ``lo..hi`` of a
    larger set, ``lo = first_chunk * batch_size``, then get the starts they get in the whole
    set (:mod:`fastrobust.evaluation.sharding` evaluates a shard so)"""
    workers: int = WORKERS
    """DataLoader processes decoding images on disk while the attacks run (0: this one)"""


def robustness_curve(
    model: Model,
    data: Data,
    threat_name: str | ThreatModel,
    eps_list: Sequence[float],
    settings: CurveSettings | None = None,
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
    workers: int = WORKERS,
) -> RobustnessCurve:
    """Adversarial accuracy at each eps of ``eps_list`` (Goodwin et al. 2020, Figure 2).

    A sample counts as robust at ``eps`` only if it is classified correctly and no restart of
    any attack of ``settings.attacks`` (``pgd``, ``apgd-ce``, ``apgd-dlr``, ``apgd-t``,
    ``fab-t``, ``fab``, ``square``, run as a cascade in the given order), at this eps or a
    smaller one, fools it. The default :class:`CurveSettings` is the paper's evaluation:
    20-step PGD, 10 random restarts, step size ``2.5 * eps / steps``; e.g.
    ``robustness_curve(model, data, "l2", [0, 1], CurveSettings(steps=10))``. ``restarts``
    applies to pgd and the untargeted APGDs; APGD-T and FAB-T run once per target
    (``targets``), Square once with ``queries`` queries; ``eot`` averages APGD's gradients.
    ``attacks=["autoattack"]`` is AutoAttack's standard version (APGD-CE, APGD-T, FAB-T,
    Square; 100 steps, 1 restart, 9 targets, 5000 queries) and ``"autoattack-rand"`` its
    version for randomised models (APGD-CE, APGD-DLR; 100 steps, EOT over 20 passes).

    ``data`` is an :class:`ImageDataset` (its test split) or ``(x, y)`` tensors (uint8, or
    floats in ``[0,1]``); ``settings.limit`` keeps a class-stratified sample of N of them
    drawn from ``settings.seed`` (:func:`~fastrobust.data.subsets.stratified_subset`),
    recorded in ``.data``. ``threat_name`` is ``l2`` or ``linf`` (or a :class:`ThreatModel`,
    whose random start is then used). Attack work runs only on still-robust samples; see the
    module docstring for why the result is nonetheless the same as the plain loop's. With
    ``settings.checks`` the gradient-masking checks run on up to ``check_size`` samples each
    and are returned in ``.checks`` / ``.warnings``. Images on disk (an imagefolder's
    :class:`~fastrobust.data.imagefolder.LazyImages`) are decoded by ``workers`` DataLoader
    processes, the next chunks while this one is attacked (0: in this process); the curve
    does not depend on it.
    """
    if settings is not None and not isinstance(settings, CurveSettings):
        raise ConfigError(
            f"settings must be a CurveSettings (e.g. CurveSettings(steps=10)), got "
            f"{type(settings).__name__}"
        )
    run = CurveRun(device=device, progress=progress, workers=workers)
    return curve_for_run(model, data, threat_name, eps_list, settings or CurveSettings(), run)


@dataclass(frozen=True)
class _Budget:
    """The attacks a curve runs and what each may spend, AutoAttack's versions resolved."""

    attacks: list[str]
    version: str | None
    steps: int
    restarts: int
    run: RunSettings


def _budget(settings: CurveSettings) -> _Budget:
    """The cascade and budgets of ``settings`` (a version's own; else 20 steps, 10 restarts)."""
    names, steps, restarts = list(settings.attacks), settings.steps, settings.restarts
    targets, queries, eot = settings.targets, settings.queries, settings.eot
    version = settings.version
    if version is not None:
        fixed_names, fixed, restarts = VERSIONS[version]
        names, steps, eot = list(fixed_names), fixed.steps, fixed.eot
        targets, queries = fixed.targets, fixed.queries
    steps = STEPS if steps is None else steps
    restarts = RESTARTS if restarts is None else restarts
    run = RunSettings(steps, settings.step_size_factor, settings.bn_mode, targets, queries, eot)
    return _Budget(names, version, steps, restarts, run)


def _fit_to_classes(budget_: _Budget, outputs: int) -> tuple[_Budget, list[str]]:
    """The budget for a model with ``outputs`` classes: attacks that need more classes are
    refused, targets are clipped to ``outputs - 1`` (with a note)."""
    attack_names, run = budget_.attacks, budget_.run
    specs = [attack_spec(name) for name in attack_names]
    for spec in specs:
        spec.check_classes(outputs)
    notes = []
    targeted = "/".join(spec.name for spec in specs if spec.targeted)
    if targeted and run.targets > outputs - 1:
        notes.append(
            f"{run.targets} target classes asked for, the model has {outputs} classes: "
            f"{targeted} use {outputs - 1}"
        )
        budget_ = dataclasses.replace(budget_, run=dataclasses.replace(run, targets=outputs - 1))
    return budget_, notes


def _refuse_probabilities(
    model: Model, x_all: torch.Tensor, dev: torch.device, budget_: _Budget, workers: int
) -> None:
    """AutoAttack's attacks (DLR and targeted losses, FAB, Square's margin) need logits."""
    needs_logits = any(attack_spec(name).needs_logits for name in budget_.attacks)
    if budget_.version is None and not needs_logits:
        return
    with attack_mode(model, budget_.run.bn_mode), torch.no_grad():
        probe = model(as_float_images(head(x_all, 64, workers=workers).to(dev)))
    if looks_like_probabilities(probe):
        raise DataError(
            "the model outputs probabilities (rows are non-negative and sum to 1), "
            "AutoAttack's attacks need logits: remove the final softmax"
        )


def _base_threat(
    threat_name: str | ThreatModel, eps: float, random_start: str | None
) -> ThreatModel:
    """The threat model at the largest eps (a given ThreatModel's random start by default)."""
    if isinstance(threat_name, ThreatModel):
        random_start = random_start or threat_name.random_start
        threat_name = threat_name.name
    return threat_model(threat_name, eps, random_start=random_start)


def curve_for_run(
    model: Model,
    data: Data,
    threat_name: str | ThreatModel,
    eps_list: Sequence[float],
    settings: CurveSettings,
    run: CurveRun,
) -> RobustnessCurve:
    """:func:`robustness_curve` with the run's internals (caption, first chunk) given; in IEEE
    fp32 unless ``settings.tf32``, without cuDNN autotuning, recorded in ``.kernels``."""
    with kernel_settings(tf32=settings.tf32, benchmark=False) as kernels:
        curve = _curve_for_run(model, data, threat_name, eps_list, settings, run)
    curve.kernels = kernels
    return curve


def _curve_for_run(
    model: Model,
    data: Data,
    threat_name: str | ThreatModel,
    eps_list: Sequence[float],
    settings: CurveSettings,
    run: CurveRun,
) -> RobustnessCurve:
    eps_values = validate_eps_list(eps_list)
    if run.first_chunk < 0:
        raise ConfigError(f"first_chunk must be >= 0, got {run.first_chunk}")
    budget_ = _budget(settings)
    base = _base_threat(threat_name, eps_values[-1], settings.random_start)
    x_all, y_all, data_info = data_tensors(data, settings.limit, settings.seed)
    dev = torch.device(run.device) if run.device is not None else model_device(model)
    probe = head(x_all, 2, workers=run.workers)
    outputs = check_model_fits(model, probe, y_all, classes=data_info.get("classes"))
    info = model_info(model)
    budget_, notes = _fit_to_classes(budget_, outputs)
    _refuse_probabilities(model, x_all, dev, budget_, run.workers)

    from tqdm.auto import tqdm

    n = len(y_all)
    started = time.perf_counter()
    with (
        attack_mode(model, settings.bn_mode),
        tqdm(
            total=n * len(eps_values), desc=run.label, unit="pt", disable=not run.progress,
            leave=False, dynamic_ncols=True,
        ) as bar,
    ):  # fmt: skip
        # images on disk: the workers decode the next chunks while this one is attacked
        batches = decoded_batches(x_all, settings.batch_size, workers=run.workers)
        chunks = [
            _curve_chunk(
                model,
                as_float_images(x_chunk.to(dev)),
                y_all[lo : lo + settings.batch_size].to(dev),
                base,
                eps_values,
                budget_.attacks,
                settings=budget_.run,
                restarts=budget_.restarts,
                seed=settings.seed,
                chunk=run.first_chunk + c,
                bar=bar,
            )  # fmt: skip
            for c, (x_chunk, lo) in enumerate(zip(batches, range(0, n, settings.batch_size)))
        ]
        curve = _assemble(chunks, base, eps_values, budget_, settings, data_info, info, notes)
        curve.time_s = time.perf_counter() - started
        if settings.checks:
            bar.set_postfix_str("masking checks", refresh=True)
            _masking_checks(curve, chunks, model, x_all, y_all, base, settings, dev, run.workers)
    if info.adversarially_trained and info.norm != base.name:
        curve.notes.append(
            f"trained against {info.norm} eps {info.eps:g}, evaluated under {base.name}"
        )
    for message in curve.warnings:
        log.warning("%s: %s", run.label, message)
    return curve


def _assemble(
    chunks: list[_Chunk],
    base: ThreatModel,
    eps_values: list[float],
    budget_: _Budget,
    settings: CurveSettings,
    data_info: dict[str, Any],
    info: ModelInfo,
    notes: list[str],
) -> RobustnessCurve:
    """The curve of the chunks' counts, in the order of the points."""
    robust = torch.cat([ch.robust for ch in chunks], 1).cpu()
    how = torch.cat([ch.how for ch in chunks], 1).cpu()
    clean_correct = torch.cat([ch.clean_correct for ch in chunks]).cpu()
    attack_names = budget_.attacks
    return RobustnessCurve(
        norm=base.name,
        eps=eps_values,
        attacks=attack_names,
        steps=budget_.steps,
        restarts=budget_.restarts,
        step_size_factor=settings.step_size_factor,
        random_start=base.random_start,
        seed=settings.seed,
        n=int(clean_correct.numel()),
        clean_correct=int(clean_correct.sum()),
        robust=[int(r) for r in robust.sum(1)],
        fooled_by=[_fooled_counts(row, attack_names) for row in how],
        robust_mask=robust,
        data={k: v for k, v in data_info.items() if k != "classes"},
        model_info=info,
        attack_gradients=sum(ch.gradients for ch in chunks),
        version=budget_.version,
        budgets={
            name: attack_spec(name).budget(budget_.run, budget_.restarts) for name in attack_names
        },
        notes=notes,
    )


def _masking_checks(
    curve: RobustnessCurve,
    chunks: list[_Chunk],
    model: Model,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    base: ThreatModel,
    settings: CurveSettings,
    dev: torch.device,
    workers: int,
) -> None:
    """Run the gradient-masking checks of ``curve`` into ``curve.checks``."""
    started = time.perf_counter()
    how = torch.cat([ch.how for ch in chunks], 1).cpu()
    inputs = CheckInputs(
        model=model,
        x=x_all,
        y=y_all,
        curve=curve,
        threat=base,
        clean_correct=torch.cat([ch.clean_correct for ch in chunks]).cpu(),
        fooled_by_attack=(how >= 0) & (how < len(curve.attacks)),
        unstable=sum(ch.unstable for ch in chunks),
        device=dev,
        batch_size=settings.batch_size,
        check_size=settings.check_size,
        bn_mode=settings.bn_mode,
        workers=workers,
    )
    curve.checks = run_checks(inputs)
    curve.checks_time_s = time.perf_counter() - started


def _fooled_counts(how_row: torch.Tensor, attacks: list[str]) -> dict[str, int]:
    counts = {
        "clean": int((how_row == _CLEAN).sum()),
        "smaller_eps": int((how_row == _CARRIED).sum()),
    }
    for a, name in enumerate(attacks):
        counts[name] = int((how_row == a).sum())
    return counts
