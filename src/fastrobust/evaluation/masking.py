"""Gradient-masking checks run alongside every robustness curve.

A curve of adversarial accuracy against eps (Goodwin et al., HPEC 2020, Figure 2) is only
trustworthy if the attack can follow the model's gradients (Athalye et al. 2018; Carlini et al.
2019, "On evaluating adversarial robustness"; the AutoAttack sanity checks). The checks here
test that the model outputs logits and is deterministic, input gradients are not zero, the
attack beats random noise of the same norm, a very large eps drives accuracy to about zero,
and accuracy does not rise with eps or with more steps.

Each check is a plain function ``check_*(inputs) -> Check`` over one :class:`CheckInputs`;
:func:`run_checks` runs them all. Random draws come from named streams (:class:`Stream`), apart
from the curve's own, and every re-attack goes through ``CheckInputs.count_survivors``, which a
test may replace with a fake attack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum

import torch

from fastrobust.attacks.contract import (
    BNMode,
    Model,
    cross_entropy_per_sample,
    fools,
    input_gradient,
    looks_like_probabilities,
)
from fastrobust.attacks.registry import RunSettings, SeededRuns
from fastrobust.attacks.restarts import seeded_generator, worst_case_over_restarts
from fastrobust.attacks.threat import ThreatModel
from fastrobust.data.disk_loader import WORKERS, decoded, decoded_batches
from fastrobust.data.subsets import stratified_subset
from fastrobust.evaluation.inputs import as_float_images
from fastrobust.evaluation.results import Check, RobustnessCurve

#: largest share of clean-correct samples allowed a zero input gradient
ZERO_GRAD_TOLERANCE = 0.01
#: largest accuracy allowed at an eps that covers the whole image box
LARGE_EPS_TOLERANCE = 0.05
#: first element of every check stream's key: keeps them apart from the curve's starts
CHECKS_STREAM = 2**31


class Stream(IntEnum):
    """The checks' named random streams; a draw's key is ``(seed, CHECKS_STREAM, stream, ...)``."""

    NOISE = 1
    """random noise of the same norm, per eps and batch"""
    MONOTONE_EPS = 2
    """starts of the fresh attack at the next eps"""
    MONOTONE_STEPS = 3
    """starts shared by the attacks with ``steps`` and ``2 * steps`` (same start on purpose)"""
    LARGE_EPS = 4
    """starts of the attack at an eps covering the whole box"""


#: a re-attack with the signature of :func:`attack_survivors`: how many of the samples ``idx``
#: stay correctly classified after the restarts of an attack
SurvivorCount = Callable[..., int]


def attack_survivors(
    inputs: CheckInputs,
    idx: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    stream: Stream,
    eps_index: int,
    restarts: int = 1,
) -> int:
    """Samples of ``idx`` still robust after ``restarts`` PGD runs (each on the survivors)."""
    x, y = inputs.batch(idx)
    key = (inputs.curve.seed, CHECKS_STREAM, int(stream), eps_index)
    settings = RunSettings(steps, inputs.curve.step_size_factor, inputs.bn_mode)
    runs = SeededRuns("pgd", inputs.model, x, y, threat, key=key, settings=settings)
    misclassified = fools(inputs.model, x, torch.zeros_like(x), y)
    worst = worst_case_over_restarts(runs, x, restarts, fooled=misclassified)
    return int((~worst.fooled).sum())


@dataclass(frozen=True)
class CheckInputs:
    """Everything the checks of one curve look at."""

    model: Model
    x: torch.Tensor
    """every evaluated image (uint8 or float in ``[0,1]``, or a LazyImages of files), as the
    curve saw them"""
    y: torch.Tensor
    curve: RobustnessCurve
    """the curve: eps grid, accuracies, steps, restarts, step size, seed"""
    threat: ThreatModel
    """the curve's threat model (norm and random start; any eps)"""
    clean_correct: torch.Tensor
    """bool per sample: correctly classified without attack"""
    fooled_by_attack: torch.Tensor
    """``len(eps) x n`` bool: first fooled by an attack run at ``eps[j]``"""
    unstable: int
    """carried adversarial examples that no longer fooled the model at a larger eps"""
    device: torch.device
    batch_size: int
    """samples per forward pass"""
    check_size: int
    """samples re-attacked by each of the attack-based checks"""
    bn_mode: BNMode = "eval"
    count_survivors: SurvivorCount = attack_survivors
    """the re-attack every attack-based check uses (tests inject a fake one)"""
    workers: int = WORKERS
    """DataLoader processes decoding images on disk (:mod:`fastrobust.data.disk_loader`)"""

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``idx`` as float images and labels on the device."""
        x = decoded(self.x, idx, workers=self.workers)
        return as_float_images(x.to(self.device)), self.y[idx].to(self.device)

    def batches(
        self, idx: torch.Tensor | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(indices, float images, labels)`` of the samples ``idx`` (all when None),
        ``batch_size`` at a time and in order; images on disk are decoded by the workers,
        the next batches while this one is checked."""
        order = torch.arange(len(self.y)) if idx is None else idx
        xs = decoded_batches(self.x, self.batch_size, indices=idx, workers=self.workers)
        for x, lo in zip(xs, range(0, len(order), self.batch_size)):
            b = order[lo : lo + self.batch_size]
            yield b, as_float_images(x.to(self.device)), self.y[b].to(self.device)

    def sample_batch(self) -> torch.Tensor:
        """Up to ``batch_size`` images of every class (the forward-only checks look at them)."""
        return self.batch(self.sample(torch.ones(len(self.y), dtype=torch.bool), self.batch_size))[
            0
        ]

    def correct(self, limit: int | None = None) -> torch.Tensor:
        """Indices of the clean-correct samples (a sample of ``limit`` of them, see
        :meth:`sample`)."""
        return self.sample(self.clean_correct, limit)

    def sample(self, where: torch.Tensor, limit: int | None) -> torch.Tensor:
        """Ascending indices of the samples where the bool mask ``where`` holds: all of them,
        or a class-stratified sample of ``limit`` drawn from the curve's seed
        (:func:`~fastrobust.data.subsets.stratified_subset`), so a check looks at every class
        and not at the first ones of a class-sorted split."""
        idx = where.cpu().nonzero().squeeze(1)
        if limit is None or limit >= idx.numel():
            return idx
        return idx[stratified_subset(self.y.cpu()[idx], limit, self.curve.seed)]


def _slack(n: int, share: float) -> int:
    """Samples a check may miss by: one, or ``share`` of them where that is more."""
    return max(1, int(share * n))


def check_logits(inputs: CheckInputs) -> Check:
    """Attacks need logits: probabilities (rows summing to 1) flatten the loss surface."""
    with torch.no_grad():
        out = inputs.model(inputs.sample_batch())
    probs = looks_like_probabilities(out)
    message = (
        "the model outputs probabilities (rows are non-negative and sum to 1): attacks need "
        "logits; remove the final softmax"
        if probs
        else "the model outputs logits"
    )
    return Check("logits", not probs, message)


def check_deterministic(inputs: CheckInputs) -> Check:
    """A randomised model (dropout at test time, random defences) needs EOT attacks."""
    x = inputs.sample_batch()
    with torch.no_grad():
        same = torch.equal(inputs.model(x), inputs.model(x)) and inputs.unstable == 0
    message = (
        "the model is not deterministic (the same input gave different outputs, or "
        f"{inputs.unstable} adversarial examples stopped fooling it): results from plain PGD "
        "are unreliable; attack with expectation over transformation"
        if not same
        else "the model is deterministic"
    )
    return Check("deterministic", same, message, {"unstable_examples": inputs.unstable})


def check_gradients(inputs: CheckInputs) -> Check:
    """Zero input gradients (saturated softmax, non-differentiable layers) stall PGD."""
    correct = inputs.correct()
    zero = total = 0
    for _, x, y in inputs.batches(correct):
        grad, _, _ = input_gradient(inputs.model, x, y, cross_entropy_per_sample)
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


def check_noise(inputs: CheckInputs) -> Check:
    """The attack must fool at least as many samples as random noise of the same norm."""
    curve = inputs.curve
    noisy = type(inputs.threat)(1.0, random_start="sphere")
    worse = []
    noise_acc = []
    for j, eps in enumerate(curve.eps):
        if eps == 0:
            noise_acc.append(curve.clean_accuracy)
            continue
        threat = noisy.with_eps(eps)
        robust = 0
        for b, x, y in inputs.batches():
            key = (curve.seed, CHECKS_STREAM, int(Stream.NOISE), j, int(b[0]))
            delta = threat.sample(x, generator=seeded_generator(inputs.device, *key))
            robust += int((~fools(inputs.model, x, delta, y)).sum())
        noise_acc.append(robust / curve.n)
        if curve.robust[j] > robust:
            worse.append(f"{eps:g} ({curve.accuracy[j]:.3f} > {robust / curve.n:.3f})")
    ok = not worse
    message = (
        "the attack is weaker than random noise of the same norm at eps "
        + ", ".join(worse)
        + ": its gradients mislead it (gradient masking?)"
        if not ok
        else "the attack beats random noise of the same norm at every eps"
    )
    return Check("noise", ok, message, {"noise_accuracy": noise_acc})


def check_monotone_eps(inputs: CheckInputs) -> Check:
    """Samples fooled at one eps must also be fooled by a fresh attack at the next eps.

    The curve itself is monotone by construction (carried examples); this re-attacks up to
    ``check_size`` of the samples (a class-stratified sample) first fooled at ``eps_{j-1}`` at ``eps_j``, with the same
    restarts. Survivors mean a plain evaluation would see accuracy rise with eps.
    """
    curve = inputs.curve
    survivors = checked = 0
    where = []
    for j in range(1, len(curve.eps)):
        if curve.eps[j - 1] == 0:
            continue
        idx = inputs.sample(inputs.fooled_by_attack[j - 1], inputs.check_size)
        if idx.numel() == 0:
            continue
        left = inputs.count_survivors(
            inputs, idx, inputs.threat.with_eps(curve.eps[j]), steps=curve.steps,
            stream=Stream.MONOTONE_EPS, eps_index=j, restarts=curve.restarts,
        )  # fmt: skip
        survivors += left
        checked += idx.numel()
        if left:
            where.append(f"{left} of {idx.numel()} at eps {curve.eps[j]:g}")
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


def check_monotone_steps(inputs: CheckInputs) -> Check:
    """Doubling the PGD steps (same start) must not raise accuracy."""
    curve = inputs.curve
    idx = inputs.correct(inputs.check_size)
    positive = [j for j, e in enumerate(curve.eps) if e > 0]
    if idx.numel() == 0 or not positive:
        return Check("monotone_steps", True, "skipped (no eps > 0 or no correct samples)")
    half = curve.clean_accuracy / 2
    j = min(positive, key=lambda i: abs(curve.accuracy[i] - half))
    threat = inputs.threat.with_eps(curve.eps[j])
    steps = curve.steps
    base, more = (
        inputs.count_survivors(
            inputs, idx, threat, steps=k, stream=Stream.MONOTONE_STEPS, eps_index=j
        )
        for k in (steps, 2 * steps)
    )
    ok = more <= base + _slack(idx.numel(), 0.02)
    values = {
        "eps": curve.eps[j],
        "checked": idx.numel(),
        f"robust_{steps}_steps": base,
        f"robust_{2 * steps}_steps": more,
    }
    message = (
        f"accuracy rose with more steps at eps {curve.eps[j]:g} ({base} robust of "
        f"{idx.numel()} with {steps} steps, {more} with {2 * steps}): the attack has not "
        "converged or the gradients are unreliable"
        if not ok
        else f"more steps do not raise accuracy ({base} -> {more} robust of {idx.numel()})"
    )
    return Check("monotone_steps", ok, message, values)


def check_large_eps(inputs: CheckInputs) -> Check:
    """At an eps covering the whole ``[0,1]`` box any image is reachable: accuracy ~ 0."""
    idx = inputs.correct(inputs.check_size)
    if idx.numel() == 0:
        return Check("large_eps", True, "skipped (no correctly classified samples)")
    big = inputs.threat.box_diameter(inputs.x.shape[1:])
    left = inputs.count_survivors(
        inputs, idx, inputs.threat.with_eps(big), steps=inputs.curve.steps,
        stream=Stream.LARGE_EPS, eps_index=len(inputs.curve.eps),
    )  # fmt: skip
    acc = left / idx.numel()
    ok = acc <= LARGE_EPS_TOLERANCE or left <= 1
    message = (
        f"at eps {big:g}, which covers the whole image box, {left} of {idx.numel()} samples "
        "stay correct: the attack cannot follow the gradients (gradient masking?)"
        if not ok
        else f"a very large eps ({big:g}) drives accuracy to {acc:.3f}"
    )
    return Check("large_eps", ok, message, {"eps": big, "robust": left, "checked": idx.numel()})


#: every check, in report order
CHECKS = (
    check_logits,
    check_deterministic,
    check_gradients,
    check_noise,
    check_monotone_eps,
    check_monotone_steps,
    check_large_eps,
)


def run_checks(inputs: CheckInputs) -> list[Check]:
    """Every gradient-masking check of one curve, in report order."""
    return [check(inputs) for check in CHECKS]
