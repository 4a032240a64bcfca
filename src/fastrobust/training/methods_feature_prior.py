"""``fgsm-fuap``: FGSM from one of many universal perturbations, picked per sample by a small
head on the model's penultimate features (FGSM-FUAP, AAAI 2024, as the FastAT Benchmark
implements it: ``fast_at/fgsm_fuap.py``, config ``fgsm_fuap.yaml``).

FGSM-UAP keeps one universal perturbation and FGSM-CUAP one per class; FGSM-FUAP keeps
``fuap_count`` of them (50) and lets the data choose. Per batch:

1. a random start ``r`` in the eps ball; one no-grad forward at ``x + r`` (running statistics
   untouched) gives the penultimate features ``h`` (the input of the model's last
   ``nn.Linear``);
2. the head ``Linear(h, count) -> ReLU -> Linear(count, classes)`` scores the perturbations;
   the sample's perturbation is the argmax of the first layer's ``count`` outputs. The head is
   trained on the same batch, by its own Adam optimiser (``fuap_lr``, 1e-3), to classify the
   sample from those outputs (the run's label-smoothed cross-entropy), so perturbations come
   to stand for groups of similar samples;
3. the start is ``project(r + u_k)``, then everything is fgsm-uap's: one FGSM step, the logit
   regulariser (``pgi_lambda``) and the move of each chosen perturbation along its group's
   gradient momentum (:meth:`UniversalPrior._move`).

Under DDP the head's gradients are averaged over the processes before its step (one small
all-reduce), and its initial weights are rank 0's, so every process keeps the same head; the
perturbations move alike as in fgsm-uap. The head, its optimiser state, the perturbations and
their momenta are in ``last.pt`` and resume exactly. Cost: fgsm-uap's plus one no-grad forward
(floor 8/3 standard steps); the head is tiny.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from fastrobust import distributed
from fastrobust.errors import ConfigError
from fastrobust.settings import at_least, check_settings, positive, setting
from fastrobust.training.methods import AttackSettings, register_method
from fastrobust.training.methods_prior import UniversalOptions, UniversalPrior


@dataclass
class FeatureUniversalOptions(UniversalOptions):
    """fgsm-fuap's options (fgsm-uap's and these)."""

    fuap_count: int = setting(50, rule=at_least(1))
    """fgsm-fuap: number of universal perturbations the feature head chooses among (FastAT
    Benchmark config uap_num: 50)"""
    fuap_lr: float = setting(1e-3, rule=positive())
    """fgsm-fuap: Adam learning rate of the head that picks each sample's perturbation from
    the model's penultimate features (FastAT Benchmark: 0.001)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


class FeatureHead(nn.Module):
    """``features -> count`` scores (the perturbation is their argmax) ``-> ReLU -> classes``."""

    def __init__(self, features: int, count: int, classes: int) -> None:
        super().__init__()
        self.score = nn.Linear(features, count)
        self.classify = nn.Linear(count, classes)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(h)
        return scores, self.classify(torch.relu(scores))


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (its classifier head, whose input is the penultimate
    features), or a one-line ConfigError for a model without one."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(
            "fgsm-fuap picks each sample's perturbation from the model's penultimate features, "
            "the input of its last nn.Linear layer, and this model has none; use fgsm-uap or "
            "fgsm-cuap",
            field="attack.method",
        )
    return linears[-1]


def penultimate_features(model: nn.Module, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """The input of ``layer`` (the model's last linear layer) at ``x``: one forward, flattened
    per row."""
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    try:
        model(x)
    finally:
        hook.remove()
    return seen[-1].flatten(1)


@register_method("fgsm-fuap")
class FeatureUniversalFGSM(UniversalPrior):
    """FGSM from one of ``fuap_count`` universal perturbations, chosen by a head on the
    penultimate features and trained alongside (FGSM-FUAP, AAAI 2024)."""

    Options = FeatureUniversalOptions

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        opts = cast(FeatureUniversalOptions, self.options)
        self.count, self.lr = opts.fuap_count, opts.fuap_lr
        self.head: FeatureHead | None = None
        self.optimiser: torch.optim.Adam | None = None
        self.pending: dict[str, Any] | None = None  # a loaded head, built at the first batch
        self.head_loss: torch.Tensor | None = None  # the head's last loss (no host sync)
        self.layer: tuple[nn.Module, nn.Linear] | None = None  # the model and its last linear

    def choose(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int
    ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        base = self.threat.sample(x)
        if self.layer is None or self.layer[0] is not model:  # found once, not every batch
            self.layer = (model, last_linear(model))
        with torch.no_grad():
            h = penultimate_features(model, x + base, self.layer[1]).float()
        head, optimiser = self._head(h.shape[1], classes, x.device)
        with torch.autocast(x.device.type, enabled=False):
            scores, out = head(h)
            loss = self.criterion(out, y)
        params = list(head.parameters())
        grads = torch.autograd.grad(loss, params)  # the head's alone: h carries no graph
        for p, g in zip(params, grads):
            if dist.is_available() and dist.is_initialized():
                distributed.all_reduce_sum(g).div_(dist.get_world_size())
            p.grad = g
        optimiser.step()
        self.head_loss = loss.detach()
        return scores.detach().argmax(1), self.count, base

    def known_classes(self) -> int | None:
        head = self.pending["head"] if self.pending is not None else None
        if head is None and self.head is not None:
            head = self.head.state_dict()
        return None if head is None else int(head["classify.bias"].shape[0])

    def _head(
        self, features: int, classes: int, device: torch.device
    ) -> tuple[FeatureHead, torch.optim.Adam]:
        """The head and its optimiser on ``device``: built at the first batch (rank 0's
        initial weights under DDP), from the checkpoint's state on a resume."""
        if self.head is None or self.optimiser is None:
            with torch.random.fork_rng(devices=[], enabled=self.pending is not None):
                # a head about to be loaded must not draw: the run's random stream goes on
                # as in a run never stopped
                self.head = FeatureHead(features, self.count, classes).to(device)
            if dist.is_available() and dist.is_initialized():
                for p in self.head.parameters():
                    dist.broadcast(p.data, src=0)
            self.optimiser = torch.optim.Adam(self.head.parameters(), lr=self.lr)
            if self.pending is not None:
                self.head.load_state_dict(self.pending["head"])
                self.optimiser.load_state_dict(self.pending["optimiser"])
                self.pending = None
        return self.head, self.optimiser

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.head is None or self.optimiser is None:
            return {**state, "head": None, "optimiser": None}
        head = {k: v.detach().cpu() for k, v in self.head.state_dict().items()}
        return {**state, "head": head, "optimiser": _to_cpu(self.optimiser.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.head = self.optimiser = None
        head = state.get("head")
        self.pending = None if head is None else {"head": head, "optimiser": state["optimiser"]}

    def describe(self) -> str:
        return (
            f"FGSM-FUAP {self.threat} step {self.step_size:g} uap_eps {self.uap_eps:g} "
            f"{self.count} perturbations lambda {self.weight:g}"
        )


def _to_cpu(value: Any) -> Any:
    """An optimiser state dict with its tensors on the CPU (for the checkpoint)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value
