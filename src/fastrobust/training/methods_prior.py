"""``fgsm-pgi``, ``fgsm-pco``, ``fgsm-uap``, ``fgsm-cuap``: single-step training from a prior
carried across batches and epochs (per sample, or one per class or for all samples).

``fgsm-pco`` (FGSM-PCO, ECCV 2024, as the FastAT Benchmark implements it) keeps fgsm-pgi's
per-sample buffer (no momentum) and trains on a mix of the prior and the FGSM perturbation;
``fgsm-uap`` / ``fgsm-cuap`` (AAAI 2024) keep one universal perturbation, or one per class,
instead of one per sample; docs/single_step.md has each one's definition.

FGSM-PGI (Jia et al., "Prior-Guided Adversarial Initialization for Fast Adversarial
Training", ECCV 2022) starts each sample's FGSM step from a perturbation remembered from the
previous epoch instead of random noise, and regularises the model so that its logits at that
start and at the adversarial example stay close. Per batch:

1. ``start`` is the sample's stored perturbation, projected for this batch's (augmented)
   image; in the first epoch and every ``pgi_reset_every`` epochs it is a random corner of
   the ball (``sphere`` start: ``+-eps`` per pixel for L-inf, as the reference's
   ``eps * sign(U(-eps, eps))``; radius eps for L2);
2. one forward at ``x + start`` (batch statistics, running statistics untouched) gives the
   input gradient ``g`` and the logits ``z0``; the adversarial example is
   ``project(start + alpha * direction(g))`` with ``alpha`` eps by default;
3. the stored perturbation for the next epoch is ``project(start + alpha * direction(m))``,
   with the gradient momentum ``m = g / ||g||_1 + pgi_momentum * m_previous`` (the momentum
   is stored per sample too; ``||g||_1`` is each sample's, so the update does not depend on
   the batch size or the number of processes, where the reference divides by the batch's);
4. the weight update minimises ``CE(f(x + delta), y) + pgi_lambda * MSE(f(x + delta), z0)``;
   ``z0`` keeps its graph, so the regulariser's gradient reaches the weights through both
   forwards, as in the reference.

Every norm: the step uses the threat model's ``direction`` (the sign for L-inf, the
per-sample L2-normalised vector for L2). Defaults are the FastAT Benchmark's CIFAR-10 config
(``configs/cifar10/fgsm_pgi.yaml``: ``lamda 10``, ``momentum_decay 0.3``,
``epochs_reset 40``).

Memory: two float32 buffers the size of the training set live on the device of every process
(``2 * N * C * H * W * 4`` bytes: 1.2 GB for CIFAR-10, 1.5 TB for ImageNet-1k at 224 px), and
``last.pt`` holds them once per process. :meth:`PriorGuidedFGSM.check_fits` refuses, before
any work, a training set whose buffers exceed ``pgi_buffer_limit_gb``. Under DDP every
process keeps the whole buffer: each writes the rows of the samples it trained on, and after
each epoch the rows are merged across processes (an all-reduce of the rows each wrote, divided
by how many processes wrote them), so that every process starts the next epoch with the same
buffers whatever sample the sampler deals it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
import torch.distributed as dist
import torch.nn.functional as functional
from torch import nn

from fastrobust import distributed
from fastrobust.attacks.contract import attack_mode
from fastrobust.attacks.threat import per_sample, project_box
from fastrobust.errors import ConfigError
from fastrobust.settings import at_least, check_settings, in_range, non_negative, setting
from fastrobust.training.collapse_resistant import SingleEpsStep
from fastrobust.training.global_batch import gather_rows, global_term
from fastrobust.training.methods import AttackSettings, register_method

#: bytes per buffered value (float32)
_BYTES = 4


@dataclass
class PriorGuidedOptions:
    """fgsm-pgi's options."""

    pgi_lambda: float = setting(10.0, rule=non_negative())
    """fgsm-pgi, fgsm-uap, fgsm-cuap, fgsm-pco: weight of the regulariser on the logits at the
    start and at the adversarial example (Jia et al. 2022; FastAT Benchmark configs: 10)"""
    pgi_momentum: float = setting(0.3, rule=in_range(0, 1))
    """fgsm-pgi, fgsm-uap, fgsm-cuap, fgsm-fuap: decay of the gradient momentum (FastAT
    Benchmark configs: 0.3)"""
    pgi_reset_every: int = setting(40, rule=at_least(1))
    """fgsm-pgi: epochs between resets of the per-sample buffers to random corners
    (FastAT Benchmark config: 40)"""
    pgi_buffer_limit_gb: float = setting(16.0, rule=non_negative())
    """fgsm-pgi, fgsm-pco: largest size of the per-sample buffers on each process, in GB; a
    larger training set is refused before any work"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


def buffer_bytes(n_train: int, image_shape: tuple[int, ...], buffers: int = 2) -> int:
    """Bytes of ``buffers`` per-sample buffers on a process (fgsm-pgi: the perturbations and
    the momenta; fgsm-pco: the perturbations)."""
    return buffers * n_train * math.prod(image_shape) * _BYTES


@register_method("fgsm-pgi")
class PriorGuidedFGSM(SingleEpsStep):
    """FGSM with prior-guided initialisation and its logit regulariser (Jia et al. 2022)."""

    Options: ClassVar[type] = PriorGuidedOptions
    needs_sample_indices = True
    #: per-sample buffers: the starts and the momenta (fgsm-pco keeps no momentum)
    buffers: ClassVar[int] = 2

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        opts: Any = self.options  # fgsm-pco's options have no momentum and no reset
        self.weight = opts.pgi_lambda
        self.decay = getattr(opts, "pgi_momentum", 0.0)
        self.reset_every = getattr(opts, "pgi_reset_every", 0)
        self.corner = type(self.threat)(self.threat.eps, random_start="sphere")
        self.delta: torch.Tensor | None = None  # N x C x H x W, the next epoch's starts
        self.momentum: torch.Tensor | None = None  # N x C x H x W
        self.written: torch.Tensor | None = None  # N: rows this process wrote this epoch
        self.fresh = True  # this epoch starts from random corners
        self.indices: torch.Tensor | None = None
        self.size = 0  # training-set size (start_batch)

    @classmethod
    def check_fits(cls, options: Any, n_train: int, image_shape: tuple[int, ...]) -> None:
        size = buffer_bytes(n_train, image_shape, cls.buffers)
        if size > options.pgi_buffer_limit_gb * 1e9:
            raise ConfigError(
                f"{cls.name} keeps {cls.buffers} per-sample buffer(s) of {n_train} x "
                f"{'x'.join(map(str, image_shape))} floats: {size / 1e9:.3g} GB on every "
                f"process, over attack.pgi_buffer_limit_gb {options.pgi_buffer_limit_gb:g}; "
                "raise the limit if the device holds it, or use a collapse-resistant method "
                "without a buffer (n-fgsm, nuat, gat)",
                field="attack.pgi_buffer_limit_gb",
            )

    def start_epoch(self, epoch: int, total: int) -> None:
        resets = self.reset_every > 0 and epoch % self.reset_every == 0
        self.fresh = resets or self.delta is None

    def start_batch(self, indices: torch.Tensor | None, dataset_size: int) -> None:
        self.indices, self.size = indices, dataset_size

    def _indices(self) -> torch.Tensor:
        if self.indices is None:
            raise ConfigError(
                f"{self.name} needs each batch's sample indices (start_batch); the fastrobust "
                "trainer's loaders give them",
                field="attack.method",
            )
        return self.indices

    def _buffers(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The per-sample buffers on ``x``'s device (allocated at the first batch)."""
        if self.delta is None or self.momentum is None:
            shape = (self.size, *x.shape[1:])
            self.delta = torch.zeros(shape, device=x.device, dtype=torch.float32)
            self.momentum = torch.zeros(shape if self.buffers == 2 else 0, device=x.device)
        if self.delta.device != x.device or self.momentum.device != x.device:
            self.delta, self.momentum = self.delta.to(x.device), self.momentum.to(x.device)
        if self.written is None or self.written.device != x.device:
            self.written = torch.zeros(self.size, dtype=torch.bool, device=x.device)
        return self.delta, self.momentum, self.written

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._indices()
        delta_buf, momentum_buf, written = self._buffers(x)
        x = x.detach()
        if self.fresh:
            start, momentum = self.corner.sample(x), torch.zeros_like(x)
        else:
            start = self.threat.project(delta_buf[idx].to(x.dtype), x)
            momentum = momentum_buf[idx].to(x.dtype)
        model = getattr(attack_model, "_orig_mod", attack_model)
        x_start = (x + start).requires_grad_(True)
        with attack_mode(model, "train"), torch.enable_grad():  # running stats untouched
            start_logits = model(x_start)
            objective = functional.cross_entropy(start_logits.float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(objective, x_start, retain_graph=True)
        grad = grad.detach()
        l1 = grad.flatten(1).abs().sum(1).clamp_min(1e-12)
        momentum = grad / per_sample(l1, grad) + self.decay * momentum
        delta = self.threat.project(self.threat.step(start, grad, self.step_size), x)
        following = self.threat.project(self.threat.step(start, momentum, self.step_size), x)
        delta_buf[idx] = following.detach().float()
        momentum_buf[idx] = momentum.detach().float()
        written[idx] = True
        logits = train_model(x + delta.detach())
        penalty = functional.mse_loss(logits.float(), start_logits.float())
        return self.criterion(logits, y) + self.weight * penalty, logits

    def end_epoch(self, check_acc: float | None, collapsed: bool) -> None:
        """Merge the rows every process wrote this epoch, so all start the next alike."""
        if self.delta is None or self.momentum is None or self.written is None:
            return
        if dist.is_available() and dist.is_initialized():
            count = self.written.float()
            distributed.all_reduce_sum(count)
            mine = per_sample(self.written.float(), self.delta)
            wrote = per_sample(count, self.delta)
            for buf in (self.delta, self.momentum)[: self.buffers]:
                summed = distributed.all_reduce_sum(buf * mine)
                buf.copy_(torch.where(wrote > 0, summed / wrote.clamp_min(1), buf))
        self.written.zero_()

    def state_dict(self) -> dict[str, Any]:
        if self.delta is None or self.momentum is None:
            return {"delta": None, "momentum": None}
        return {"delta": self.delta.detach().cpu(), "momentum": self.momentum.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.delta, self.momentum = state.get("delta"), state.get("momentum")
        self.written = None

    def describe(self) -> str:
        return (
            f"FGSM-PGI {self.threat} step {self.step_size:g} lambda {self.weight:g} "
            f"momentum {self.decay:g} reset every {self.reset_every}"
        )


@dataclass
class PCOOptions:
    """fgsm-pco's options."""

    pco_beta: float = setting(1.5, rule=non_negative())
    """fgsm-pco: scale of the FGSM perturbation at the adversarial end of the training point
    (FastAT Benchmark config beta: 1.5)"""
    pco_label: float = setting(0.6, rule=in_range(0, 1))
    """fgsm-pco: probability the smoothed target gives the true class (FastAT Benchmark config
    factor: 0.6)"""
    pgi_lambda: float = setting(10.0, rule=non_negative())
    """fgsm-pgi, fgsm-uap, fgsm-cuap, fgsm-pco: weight of the regulariser on the logits at the
    start and at the adversarial example (FastAT Benchmark configs: 10)"""
    pgi_buffer_limit_gb: float = setting(16.0, rule=non_negative())
    """fgsm-pgi, fgsm-pco: largest size of the per-sample buffers on each process, in GB; a
    larger training set is refused before any work"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


def smoothed_targets(y: torch.Tensor, classes: int, true: float) -> torch.Tensor:
    """Target probabilities: ``true`` for the label, the rest shared by the other classes."""
    rest = (1.0 - true) / max(classes - 1, 1)
    targets = torch.full((len(y), classes), rest, device=y.device)
    return targets.scatter_(1, y[:, None], true)


@register_method("fgsm-pco")
class PriorCombinedFGSM(PriorGuidedFGSM):
    """FGSM-PCO (ECCV 2024): the training point combines the sample's prior perturbation and
    the FGSM one, weighted by how unsure the model is at the prior."""

    Options = PCOOptions
    buffers = 1

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        opts = cast(PCOOptions, self.options)
        self.beta, self.true = opts.pco_beta, opts.pco_label

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._indices()
        delta_buf, _, written = self._buffers(x)
        x = x.detach()
        fresh = self.fresh
        start = self.corner.sample(x) if fresh else self.threat.project(delta_buf[idx].to(x), x)
        model = getattr(attack_model, "_orig_mod", attack_model)
        x_start = (x + start).requires_grad_(True)
        with attack_mode(model, "train"), torch.enable_grad():  # running stats untouched
            start_logits = model(x_start)
            targets = smoothed_targets(y, start_logits.shape[1], self.true)
            objective = functional.cross_entropy(start_logits.float(), targets, reduction="sum")
            (grad,) = torch.autograd.grad(objective, x_start, retain_graph=True)
        fgsm = self.threat.project(self.threat.step(start, grad.detach(), self.step_size), x)
        unsure = 1 - start_logits.detach().float().softmax(1).gather(1, y[:, None]).squeeze(1)
        unsure = per_sample(unsure, x).to(x.dtype)
        combined = project_box(unsure * start + (1 - unsure) * self.beta * fgsm, x)
        delta_buf[idx] = fgsm.detach().float()
        written[idx] = True
        logits = train_model(x + combined.detach())
        fgsm_logits = train_model(x + fgsm.detach())
        mse = functional.mse_loss
        # the gap of two means over the global batch (every rank's rows under DDP)
        fgsm_all, start_all, all_ = (
            gather_rows(t.float()) for t in (fgsm_logits, start_logits, logits)
        )
        gap = mse(fgsm_all, start_all) - mse(fgsm_all, all_)
        ce = self.criterion(logits, targets)
        return ce + global_term(self.weight * gap.abs()), logits

    def describe(self) -> str:
        return (
            f"FGSM-PCO {self.threat} step {self.step_size:g} beta {self.beta:g} "
            f"lambda {self.weight:g} label {self.true:g}"
        )


@dataclass
class UniversalOptions:
    """fgsm-uap's and fgsm-cuap's options."""

    uap_eps: float | None = setting(None, rule=non_negative())
    """fgsm-uap, fgsm-cuap, fgsm-fuap: radius of the universal (per-class) perturbations the
    start is drawn from, clipped to eps when used; default 1.25 * eps (FastAT Benchmark
    config: 10/255 at eps 8/255)"""
    pgi_lambda: float = setting(10.0, rule=non_negative())
    """fgsm-pgi, fgsm-uap, fgsm-cuap, fgsm-fuap: weight of the MSE between the logits at the
    start and at the adversarial example (Jia et al. 2022; FastAT Benchmark configs: 10)"""
    pgi_momentum: float = setting(0.3, rule=in_range(0, 1))
    """fgsm-pgi, fgsm-uap, fgsm-cuap, fgsm-fuap: decay of the gradient momentum (FastAT
    Benchmark configs: 0.3)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


#: fgsm-uap's and fgsm-cuap's default universal radius as a multiple of eps (10/255 at 8/255)
UAP_EPS_FACTOR = 1.25


class UniversalPrior(SingleEpsStep):
    """FGSM from a universal perturbation shared by a group of samples (all of them, or each
    class), moved after each batch along the momentum of its group's mean normalised input
    gradient, with FGSM-PGI's logit regulariser. Subclasses say how many groups and which
    group a sample is in."""

    Options = UniversalOptions

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        opts = cast(UniversalOptions, self.options)
        eps = cast(float, self.threat.eps)
        self.uap_eps = UAP_EPS_FACTOR * eps if opts.uap_eps is None else opts.uap_eps
        self.weight, self.decay = opts.pgi_lambda, opts.pgi_momentum
        self.universal = type(self.threat)(self.uap_eps, random_start="sphere")
        self.prior: torch.Tensor | None = None  # groups x C x H x W
        self.momentum: torch.Tensor | None = None

    def groups(self, y: torch.Tensor, classes: int) -> tuple[torch.Tensor, int]:
        """Each sample's group and the number of groups (``classes``: the model's outputs)."""
        raise NotImplementedError

    def known_classes(self) -> int | None:
        """The model's number of outputs where the state tells it without a forward (None:
        ask the model); only fgsm-cuap's groups depend on it, one perturbation per class."""
        return None if self.prior is None else len(self.prior)

    def choose(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int
    ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """Each sample's group, the number of groups, and the start the group's perturbation
        is added to (None: none, the perturbation alone); by label (:meth:`groups`) here."""
        group, count = self.groups(y, classes)
        return group, count, None

    def _state(self, x: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The perturbations and momenta on ``x``'s device; drawn at the first batch (random
        points of the uap_eps sphere: corners for L-inf) and, under DDP, rank 0's taken."""
        if self.prior is None or self.momentum is None:
            zeros = torch.zeros((count, *x.shape[1:]), device=x.device)
            self.prior = self.universal.step(zeros, torch.randn_like(zeros), self.uap_eps)
            if dist.is_available() and dist.is_initialized():
                dist.broadcast(self.prior, src=0)
            self.momentum = torch.zeros_like(self.prior)
        if self.prior.device != x.device or self.momentum.device != x.device:
            self.prior, self.momentum = self.prior.to(x.device), self.momentum.to(x.device)
        return self.prior, self.momentum

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach()
        model = getattr(attack_model, "_orig_mod", attack_model)
        with attack_mode(model, "train"), torch.enable_grad():  # running stats untouched
            known = self.known_classes()
            if known is None:  # the number of classes from the first forward
                with torch.no_grad():
                    known = model(x[:1]).shape[1]
            classes = known
            group, count, base = self.choose(model, x, y, classes)
            prior, momentum = self._state(x, count)
            rows = prior[group].to(x.dtype)
            start = self.threat.project(rows if base is None else base + rows, x)
            x_start = (x + start).requires_grad_(True)
            start_logits = model(x_start)
            objective = functional.cross_entropy(start_logits.float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(objective, x_start, retain_graph=True)
        grad = grad.detach()
        delta = self.threat.project(self.threat.step(start, grad, self.step_size), x)
        self._move(grad, group, prior, momentum)
        logits = train_model(x + delta.detach())
        penalty = functional.mse_loss(logits.float(), start_logits.float())
        return self.criterion(logits, y) + self.weight * penalty, logits

    def _move(
        self, grad: torch.Tensor, group: torch.Tensor, prior: torch.Tensor, momentum: torch.Tensor
    ) -> None:
        """Each group present in the batch (on any process): momentum = its samples' mean
        L1-normalised gradient + decay * momentum; prior = project(prior + uap_eps *
        direction(momentum)) into the uap_eps ball."""
        l1 = grad.flatten(1).abs().sum(1).clamp_min(1e-12)
        normed = (grad / per_sample(l1, grad)).float()
        sums = torch.zeros_like(prior).index_add_(0, group, normed)
        counts = torch.bincount(group, minlength=len(prior)).to(prior)
        distributed.all_reduce_sum(sums)  # every process moves the priors alike
        distributed.all_reduce_sum(counts)
        seen = per_sample(counts, prior) > 0
        moved = sums / per_sample(counts.clamp_min(1), prior) + self.decay * momentum
        momentum.copy_(torch.where(seen, moved, momentum))
        stepped = self.universal.project_ball(self.universal.step(prior, momentum, self.uap_eps))
        prior.copy_(torch.where(seen, stepped, prior))

    def state_dict(self) -> dict[str, Any]:
        if self.prior is None or self.momentum is None:
            return {"prior": None, "momentum": None}
        return {"prior": self.prior.detach().cpu(), "momentum": self.momentum.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prior, self.momentum = state.get("prior"), state.get("momentum")


@register_method("fgsm-uap")
class UniversalFGSM(UniversalPrior):
    """FGSM from one universal perturbation (FGSM-UAP, AAAI 2024)."""

    def groups(self, y: torch.Tensor, classes: int) -> tuple[torch.Tensor, int]:
        return torch.zeros_like(y), 1

    def describe(self) -> str:
        return (
            f"FGSM-UAP {self.threat} step {self.step_size:g} uap_eps {self.uap_eps:g} "
            f"lambda {self.weight:g}"
        )


@register_method("fgsm-cuap")
class ClassUniversalFGSM(UniversalPrior):
    """FGSM from one universal perturbation per class (FGSM-CUAP, AAAI 2024)."""

    def groups(self, y: torch.Tensor, classes: int) -> tuple[torch.Tensor, int]:
        return y, classes

    def describe(self) -> str:
        return (
            f"FGSM-CUAP {self.threat} step {self.step_size:g} uap_eps {self.uap_eps:g} "
            f"lambda {self.weight:g}"
        )
