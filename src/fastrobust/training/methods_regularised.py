"""Single-step methods with a regulariser or a changed step: ``nuat``, ``gat``, ``elle``,
``zerograd``, ``n-aaer`` and ``liet`` (Pan et al., ICCV 2025: a class-wise start from a grey
image's input gradient, partly replaced by noise, and a Jensen-Shannon term) (docs/single_step.md: paper, idea, defaults and their source).

* ``nuat`` (Sriramanan et al., "Towards Efficient and Effective Adversarial Training",
  NeurIPS 2021): a Bernoulli start (``+-eps/2`` per pixel; L2: radius ``eps/2``), one step
  of size eps on cross-entropy plus, every other batch, the nuclear norm of the clean minus
  the perturbed logits; the weights minimise clean cross-entropy plus
  ``w * ||f(x) - f(x + delta)||_* / B``, ``w`` growing linearly from 0 to ``nuat_max`` over
  the run.
* ``gat`` (Sriramanan et al., "Guided Adversarial Attack for Evaluating and Enhancing
  Adversarial Defenses", NeurIPS 2020): the same Bernoulli start and one eps step, guided
  every other batch by ``||softmax f(x) - softmax f(x')||^2``; the weights minimise clean
  cross-entropy plus ``gat_lambda`` times that squared distance at the adversarial example.
* ``elle`` (Abad Rocamora et al., "Efficient local linearity regularization to overcome
  catastrophic overfitting", ICLR 2024): the ``fast`` step plus ``elle_lambda`` times the
  local-linearity error of the loss: for ``a, b`` drawn in the ball and ``c`` a random point
  between them, ``(L(x+c) - (1-t) L(x+a) - t L(x+b))^2``; three forwards, no double backprop.
* ``zerograd`` (Golgooni et al., "ZeroGrad: Mitigating and Explaining Catastrophic
  Overfitting in FGSM Adversarial Training", 2021): FGSM with a random start whose gradient
  components below the ``zerograd_quantile`` of each sample's ``|g|`` are zeroed, so their
  pixels do not move. L-inf only: the idea repairs the sign, which gives the tiniest
  components a full step; the L2 step already moves each pixel in proportion to its
  gradient.
* ``n-aaer`` (Lin et al., "Eliminating Catastrophic Overfitting via Abnormal Adversarial
  Examples Regularization", NeurIPS 2023): the ``n-fgsm`` example plus a penalty on the
  *abnormal* examples, those whose loss the step lowered: their loss drop and their logit
  change beyond the normal examples'.

Each attack forward runs on the unwrapped model in a stated BatchNorm mode (running
statistics untouched) and takes input gradients only. Where a regulariser compares an attack
forward with a training forward (``n-aaer``'s logits before and after the step), the attack
forward uses batch statistics, as the training forward does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as functional
from torch import nn

from fastrobust.attacks.contract import BNMode, attack_mode, cross_entropy_per_sample
from fastrobust.attacks.threat import ThreatModel
from fastrobust.errors import ConfigError
from fastrobust.settings import at_least, check_settings, in_range, non_negative, setting
from fastrobust.training.collapse_resistant import SingleEpsStep
from fastrobust.training.global_batch import gather_rows, global_term, shared_draw
from fastrobust.training.methods import AttackSettings, Fast, TrainingMethod, register_method
from fastrobust.training.perturbations import nfgsm_default_noise_factor, nfgsm_noise, nfgsm_step


@dataclass
class NuATOptions:
    """nuat's options."""

    nuat_max: float = setting(4.0, rule=non_negative())
    """nuat: final weight of the nuclear-norm regulariser, reached linearly from 0 over the
    run (FastAT Benchmark config nuc_max: 4.0)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


@dataclass
class GATOptions:
    """gat's options."""

    gat_lambda: float = setting(10.0, rule=non_negative())
    """gat: weight of the squared distance between clean and adversarial softmax outputs
    (FastAT Benchmark config l2_reg: 10)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


@dataclass
class ELLEOptions:
    """elle's options."""

    elle_lambda: float = setting(1.0, rule=non_negative())
    """elle: weight of the local-linearity error (FastAT Benchmark config lin_reg: 1.0,
    constant)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


@dataclass
class ZeroGradOptions:
    """zerograd's options."""

    zerograd_quantile: float = setting(0.35, rule=in_range(0, 1, high_open=True))
    """zerograd: share of each sample's smallest gradient components set to zero
    (FastAT Benchmark config q_val: 0.35)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


@dataclass
class AAEROptions:
    """n-aaer's options."""

    noise_factor: float | None = setting(None, rule=non_negative())
    """n-fgsm, n-aaer: radius of the uniform noise as a multiple of eps; default 2 for Linf
    (de Jorge et al. 2022), 1 for L2 (docs/catastrophic_overfitting.md)"""
    aaer_lambda1: float = setting(1.0, rule=non_negative())
    """n-aaer: overall weight of the penalty, times the share of abnormal examples
    (FastAT Benchmark config lamda1: 1.0)"""
    aaer_lambda2: float = setting(1.5, rule=non_negative())
    """n-aaer: weight of the abnormal examples' loss drop (FastAT Benchmark config lamda2: 1.5)"""
    aaer_lambda3: float = setting(0.15, rule=non_negative())
    """n-aaer: weight of the abnormal examples' logit change beyond the normal ones'
    (FastAT Benchmark config lamda3: 0.15)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


def bernoulli_start(threat: ThreatModel, x: torch.Tensor) -> torch.Tensor:
    """NuAT's and GAT's start: a random point of the sphere of radius ``eps / 2`` (L-inf:
    ``+-eps/2`` per pixel, the papers' Bernoulli noise), kept in the box."""
    half = type(threat)(cast(float, threat.eps) / 2, random_start="sphere")
    return half.sample(x)


def nuclear_norm(a: torch.Tensor) -> torch.Tensor:
    """Nuclear norm (sum of singular values) of the ``B x K`` matrix ``a``."""
    return cast(torch.Tensor, torch.linalg.matrix_norm(a.float(), ord="nuc"))


def squared_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-sample squared L2 distance of two ``B x K`` matrices (shape B)."""
    return (p.float() - q.float()).square().sum(1)


class GuidedStep(SingleEpsStep):
    """NuAT's and GAT's shape: Bernoulli start, one eps step whose loss adds, every other
    batch, a distance between the clean and the perturbed outputs; clean cross-entropy plus
    the distance at the adversarial example for the weights. Subclasses give the distance."""

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.bn_mode: BNMode = attack.bn_mode
        self.batch = 0  # within the epoch: odd batches guide the attack
        self.weight = 0.0

    def start_epoch(self, epoch: int, total: int) -> None:
        self.batch = 0

    def distance(self, clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """The regulariser summed over the batch (``clean``, ``other``: logits)."""
        raise NotImplementedError

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        start = bernoulli_start(self.threat, x)
        guided = self.batch % 2 == 1 and self.weight > 0
        self.batch += 1
        with attack_mode(model, self.bn_mode):
            clean = None
            if guided:
                with torch.no_grad():
                    clean = model(x)
            x_start = (x + start).requires_grad_(True)
            with torch.enable_grad():
                out = model(x_start)
                objective = functional.cross_entropy(out.float(), y, reduction="sum")
                if clean is not None:
                    objective = objective + self.weight * self.distance(clean, out)
                (grad,) = torch.autograd.grad(objective, x_start)
        delta = self.threat.project(self.threat.step(start, grad, self.step_size), x)
        return (x + delta).detach()

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.perturb(attack_model, x, y)
        adv = train_model(x_adv)
        clean = train_model(x)
        return self.criterion(clean, y) + self.weight * self.penalty(clean, adv), adv

    def penalty(self, clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """The weight update's regulariser: the distance per sample of the batch."""
        return self.distance(clean, adv) / len(clean)


@register_method("nuat")
class NuAT(GuidedStep):
    """Nuclear-norm adversarial training (Sriramanan et al. 2021)."""

    Options = NuATOptions

    def start_epoch(self, epoch: int, total: int) -> None:
        super().start_epoch(epoch, total)
        self.weight = cast(NuATOptions, self.options).nuat_max * epoch / max(total, 1)

    def distance(self, clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """The nuclear norm of the global batch's logit differences (under DDP every rank's
        rows, its own differentiable: the papers' norm is the batch matrix's)."""
        return nuclear_norm(gather_rows(clean - other))

    def penalty(self, clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        diff = gather_rows(clean - adv)
        return global_term(nuclear_norm(diff) / len(diff))

    def describe(self) -> str:
        return f"NuAT {self.threat} step {self.step_size:g} weight {self.weight:.3g}"


@register_method("gat")
class GAT(GuidedStep):
    """Guided adversarial training (Sriramanan et al. 2020)."""

    Options = GATOptions

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.weight = cast(GATOptions, self.options).gat_lambda

    def distance(self, clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return squared_distance(clean.softmax(1), other.softmax(1)).sum()

    def describe(self) -> str:
        return f"GAT {self.threat} step {self.step_size:g} lambda {self.weight:g}"


def one_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    step_size: float,
    bn_mode: BNMode,
    keep: float = 0.0,
) -> torch.Tensor:
    """FGSM from the threat model's random start, projected; with ``keep`` > 0 the gradient
    components below that quantile of each sample's ``|g|`` are zeroed first (ZeroGrad)."""
    x = x.detach()
    start = threat.sample(x)
    x_start = (x + start).requires_grad_(True)
    with attack_mode(model, bn_mode), torch.enable_grad():
        objective = functional.cross_entropy(model(x_start).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(objective, x_start)
    if keep > 0:
        grad = zero_small_components(grad, keep)
    return (x + threat.project(threat.step(start, grad, step_size), x)).detach()


def zero_small_components(grad: torch.Tensor, q: float) -> torch.Tensor:
    """``grad`` with each sample's components whose magnitude is below the ``q`` quantile of
    that sample's magnitudes set to zero (the ``lower`` order statistic, as
    ``numpy.quantile(method="lower")``; ``kthvalue`` has no size limit, unlike
    ``torch.quantile``)."""
    flat = grad.flatten(1).abs()
    k = int(q * (flat.shape[1] - 1)) + 1
    threshold = flat.kthvalue(k, dim=1, keepdim=True).values
    return torch.where(flat < threshold, torch.zeros_like(flat), grad.flatten(1)).view_as(grad)


@register_method("elle")
class ELLE(TrainingMethod):
    """The ``fast`` step plus ELLE's local-linearity regulariser (Abad Rocamora et al. 2024)."""

    default_steps = 1
    fixed_steps = 1
    Options = ELLEOptions

    @classmethod
    def default_step_size(cls, threat: ThreatModel, steps: int) -> float:
        return Fast.default_step_size(threat, steps)

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.threat = attack.threat()
        self.step_size = attack.attack_alpha
        self.bn_mode: BNMode = attack.bn_mode
        self.weight = cast(ELLEOptions, self.options).elle_lambda

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return one_step(model, x, y, self.threat, self.step_size, self.bn_mode)

    def linearity_error(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of ``(L(x+c) - (1-t) L(x+a) - t L(x+b))^2`` for ``a, b`` in the
        ball (and the box), ``t ~ U(0,1)`` per sample and ``c = (1-t) a + t b`` (in both by
        convexity); one forward of the three batches, differentiable in the weights."""
        a, b = self.threat.sample(x), self.threat.sample(x)
        t = torch.rand(len(x), device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
        c = (1 - t) * a + t * b
        x3 = x.repeat(3, *([1] * (x.dim() - 1))) + torch.cat((a, b, c))
        losses = cross_entropy_per_sample(model(x3).float(), y.repeat(3))
        la, lb, lc = losses.chunk(3)
        t = t.flatten()
        return (lc - (1 - t) * la - t * lb).square().mean()

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = train_model(self.perturb(attack_model, x, y))
        ce = self.criterion(logits, y)
        return ce + self.weight * self.linearity_error(train_model, x.detach(), y), logits

    def describe(self) -> str:
        return f"ELLE lambda {self.weight:g} + 1-step {self.threat} alpha {self.step_size:g}"


@register_method("zerograd")
class ZeroGrad(TrainingMethod):
    """FGSM with random start whose small gradient components are zeroed (Golgooni et al.)."""

    default_steps = 1
    fixed_steps = 1
    Options = ZeroGradOptions
    norms = ("linf",)
    norms_reason = (
        "it zeroes the gradient components the sign step would move a full eps; an L2 "
        "step already moves each pixel in proportion to its gradient"
    )

    @classmethod
    def default_step_size(cls, threat: ThreatModel, steps: int) -> float:
        return 2.0 * cast(float, threat.eps)  # FastAT Benchmark config fgsm_alpha: 2.0

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.threat = attack.threat()
        self.step_size = attack.attack_alpha
        self.bn_mode: BNMode = attack.bn_mode
        self.keep = cast(ZeroGradOptions, self.options).zerograd_quantile

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return one_step(model, x, y, self.threat, self.step_size, self.bn_mode, keep=self.keep)

    def describe(self) -> str:
        return f"ZeroGrad q {self.keep:g} 1-step {self.threat} alpha {self.step_size:g}"


@register_method("n-aaer")
class NoiseAAER(SingleEpsStep):
    """N-FGSM plus abnormal adversarial example regularisation (Lin et al. 2023)."""

    Options = AAEROptions

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        opts = cast(AAEROptions, self.options)
        given = opts.noise_factor
        self.noise_factor = nfgsm_default_noise_factor(self.threat) if given is None else given
        self.lambdas = (opts.aaer_lambda1, opts.aaer_lambda2, opts.aaer_lambda3)

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach()
        noise = nfgsm_noise(self.threat, x, noise_factor=self.noise_factor)
        x_noise = (x + noise).requires_grad_(True)
        with attack_mode(attack_model, "train"), torch.enable_grad():  # running stats untouched
            before = attack_model(x_noise)
            loss_before = cross_entropy_per_sample(before.float(), y)
            (grad,) = torch.autograd.grad(loss_before.sum(), x_noise)
        delta = nfgsm_step(self.threat, x, noise, grad.detach(), self.step_size)
        logits = train_model(x + delta)
        losses = cross_entropy_per_sample(logits.float(), y)
        # the abnormal share and means are the global batch's (every rank's rows under DDP)
        rows = (before.detach(), loss_before.detach(), logits, losses)
        term = global_term(self.penalty(*(gather_rows(t) for t in rows)))
        return self.criterion(logits, y) + term, logits

    def penalty(
        self,
        before: torch.Tensor,
        loss_before: torch.Tensor,
        after: torch.Tensor,
        loss_after: torch.Tensor,
    ) -> torch.Tensor:
        """AAER's term: ``l1 * share * (l2 * drop + l3 * max(var_abnormal - var_normal, 0))``
        over the abnormal examples (the loss fell: ``loss_before > loss_after``); zero when
        the batch has no abnormal or no normal example. No host sync."""
        l1, l2, l3 = self.lambdas
        abnormal = (loss_before > loss_after.detach()).float()
        normal = 1 - abnormal
        n_ab, n_normal = abnormal.sum(), normal.sum()
        variation = squared_distance(before, after)
        drop = (abnormal * (loss_before - loss_after)).sum() / n_ab.clamp_min(1)
        var_ab = (abnormal * variation).sum() / n_ab.clamp_min(1)
        var_normal = (normal * variation.detach()).sum() / n_normal.clamp_min(1)
        excess = (var_ab - var_normal).clamp(-100, 100).clamp_min(0)
        term = l1 * n_ab / len(loss_after) * (l2 * drop + l3 * excess)
        return torch.where((n_ab > 0) & (n_normal > 0), term, torch.zeros_like(term))

    def describe(self) -> str:
        return (
            f"N-AAER {self.threat} noise {self.noise_factor:g}*eps step {self.step_size:g} "
            f"lambdas {'/'.join(f'{v:g}' for v in self.lambdas)}"
        )


@dataclass
class LIETOptions:
    """liet's options."""

    liet_lambda: float = setting(100.0, rule=non_negative())
    """liet: final weight of the Jensen-Shannon term, reached linearly over the run
    (FastAT Benchmark config lambda: 100)"""
    liet_mask_min: float = setting(0.1, rule=in_range(0, 1))
    """liet: smallest share of pixels whose start is uniform noise (config min_mask_ratio: 0.1)"""
    liet_mask_max: float = setting(0.5, rule=in_range(0, 1))
    """liet: largest share of pixels whose start is uniform noise (config max_mask_ratio: 0.5)"""
    liet_refresh: int = setting(20, rule=at_least(1))
    """liet: batches between recomputations of the class-wise start (config li_update: 20)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")
        if self.liet_mask_min > self.liet_mask_max:
            raise ConfigError(
                f"attack.liet_mask_min {self.liet_mask_min:g} is above attack.liet_mask_max "
                f"{self.liet_mask_max:g}",
                field="attack.liet_mask_min",
            )


def jensen_shannon(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Jensen-Shannon divergence of two softmax outputs."""
    p, q = p_logits.float().softmax(1), q_logits.float().softmax(1)
    log_m = ((p + q) / 2).clamp_min(1e-12).log()
    kl = functional.kl_div
    return (kl(log_m, p, reduction="batchmean") + kl(log_m, q, reduction="batchmean")) / 2


@register_method("liet")
class LIET(SingleEpsStep):
    """LIET (Pan et al., ICCV 2025, as the FastAT Benchmark implements it): a class-wise start
    from the input gradient at a grey image, part of it replaced by noise, and a
    Jensen-Shannon term between the outputs at the start and at the adversarial example."""

    Options = LIETOptions
    norms = ("linf",)
    norms_reason = (
        "its start mixes, pixel by pixel, a sign perturbation with uniform noise, which keeps "
        "the L-inf bound of both but has no L2 counterpart"
    )

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.opts = cast(LIETOptions, self.options)
        self.bn_mode: BNMode = attack.bn_mode
        self.weight, self.batch = 0.0, 0
        self.start_of_class: torch.Tensor | None = None

    def start_epoch(self, epoch: int, total: int) -> None:
        self.weight = self.opts.liet_lambda * (epoch + 1) / max(total, 1)
        self.batch = 0

    def class_starts(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``eps * direction`` of each class's cross-entropy gradient at a grey image."""
        with attack_mode(model, self.bn_mode), torch.enable_grad():
            classes = model(torch.full_like(x[:1], 0.5)).shape[1]
            grey = torch.full((classes, *x.shape[1:]), 0.5, device=x.device, dtype=x.dtype)
            grey.requires_grad_(True)
            objective = functional.cross_entropy(
                model(grey).float(), torch.arange(classes, device=x.device), reduction="sum"
            )
            (grad,) = torch.autograd.grad(objective, grey)
        return self.threat.step(torch.zeros_like(grad), grad, cast(float, self.threat.eps))

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach()
        model = getattr(attack_model, "_orig_mod", attack_model)
        if self.batch % self.opts.liet_refresh == 0 or self.start_of_class is None:
            self.start_of_class = self.class_starts(model, x).detach()
        self.batch += 1
        low, high = self.opts.liet_mask_min, self.opts.liet_mask_max
        # one noise share and one sign for the batch: under DDP rank 0's, for the global batch
        share = low + (high - low) * shared_draw(float(torch.rand(())))
        delta = self.start_of_class[y].to(x.dtype)
        delta = torch.where(torch.rand_like(x) < share, self.threat.sample(x), delta)
        if shared_draw(float(torch.rand(()))) < 0.5:
            delta = -delta
        start = self.threat.project(delta, x)
        x_start = (x + start).requires_grad_(True)
        with attack_mode(model, "train"), torch.enable_grad():  # running stats untouched
            start_logits = model(x_start)
            objective = functional.cross_entropy(start_logits.float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(objective, x_start, retain_graph=True)
        adv = self.threat.project(self.threat.step(start, grad.detach(), self.step_size), x)
        logits = train_model(x + adv.detach())
        term = jensen_shannon(start_logits, logits)
        return self.criterion(logits, y) + self.weight * term, logits

    def describe(self) -> str:
        return f"LIET {self.threat} step {self.step_size:g} weight {self.weight:.3g}"
