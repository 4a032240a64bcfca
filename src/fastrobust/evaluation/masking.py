"""Gradient-masking checks run alongside every robustness curve.

A curve of adversarial accuracy against eps (Goodwin et al., HPEC 2020, Figure 2) is only
trustworthy if the attack can follow the model's gradients (Athalye et al. 2018; Carlini et al.
2019, "On evaluating adversarial robustness"; the AutoAttack sanity checks). The checks here
test that the model outputs logits and is deterministic, input gradients are not zero, the
attack beats random noise of the same norm, a very large eps drives accuracy to about zero,
and accuracy does not rise with eps or with more steps. Each gives a :class:`Check`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from fastrobust.attacks.projected_gradient import BNMode, cross_entropy_per_sample, input_gradient
from fastrobust.attacks.restarts import Model, _as_float, _fools, _seed, run_attack
from fastrobust.attacks.threat import ThreatModel

if TYPE_CHECKING:
    from fastrobust.evaluation.curve import RobustnessCurve

#: seeds of the checks' random draws, apart from the curve's
_CHECKS_STREAM = 2**31


@dataclass
class Check:
    """One gradient-masking check: its name, whether it passed, what it saw."""

    name: str
    passed: bool
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "message": self.message, **self.values}


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
