"""Per-sample random draws for comparing a DDP run with a one-process run (issue 21).

Two gloo ranks with half the global batch each cannot equal one process as methods run: each
rank draws its random starts and noise from its own stream, and draws them for its half of the
batch. :func:`per_sample_draws` replaces every draw a training method makes *for the batch* (a
tensor with one row per sample of the batch: ``ThreatModel.sample``, ``torch.rand_like`` /
``torch.randn_like`` and ``torch.rand`` / ``torch.randn`` with the batch along dimension 0 or 1)
by rows each drawn from a generator seeded with the sample's index in the training set, the
epoch and the draw's place in the batch's sequence of draws. A sample then gets the same noise
whichever process trains on it and whatever else is in its batch, while each draw keeps its
distribution (the real samplers run, from those generators).

What is left to the process's own stream: draws that are not per sample (a scalar, a tensor
of another length). A method whose result depends on those must make every rank use the same
draw for DDP to equal one process; the comparisons (tests/test_distributed.py,
tests/test_ddp_methods.py) then find out whether it does, since rank 0's stream is the one-process stream and rank 1's is another.

:func:`method_steps` runs two training steps of a method, on one process or (under a process
group) through DDP, for the methods with a term or a draw of the whole batch
(:data:`BATCH_TERMS`; the test is in tests/test_distributed.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastrobust import distributed
from fastrobust.attacks.threat import ThreatModel
from fastrobust.data import load_dataset
from fastrobust.data.base import to_float
from fastrobust.data.loader import InMemoryLoader
from fastrobust.training.config import AttackConfig
from fastrobust.training.methods import build_method, method_class
from fastrobust.training.setup import wrap_for_training


@dataclass
class _Batch:
    """The training batch being trained on: its sample indices, epoch, and draws so far."""

    indices: list[int]
    epoch: int
    draws: int = 0

    def rows(self, n: int) -> list[torch.Generator] | None:
        """One generator per sample for the batch's next draw of ``n`` rows (None: not a
        draw for this batch)."""
        if n != len(self.indices):
            return None
        self.draws += 1
        out = []
        for index in self.indices:
            g = torch.Generator()
            g.manual_seed((index * 1_000_003 + self.epoch) * 10_007 + self.draws)
            out.append(g)
        return out


_current: list[_Batch | None] = [None]


def _size(args: tuple[Any, ...]) -> tuple[int, ...]:
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    return tuple(int(a) for a in args)


def _per_row(
    original: Callable[..., torch.Tensor], shape: tuple[int, ...], kwargs: dict[str, Any]
) -> torch.Tensor | None:
    """``original(shape)`` drawn row by row along the batch dimension (0, else 1), or None."""
    current = _current[0]
    if current is None or kwargs.get("generator") is not None or not shape:
        return None
    for dim in (0, 1)[: len(shape)]:
        gens = current.rows(shape[dim])
        if gens is not None:
            row = shape[:dim] + shape[dim + 1 :]
            draws = [original(row, **(kwargs | {"generator": g})) for g in gens]
            return torch.stack(draws, dim)
    return None


def _sized(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def draw(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = _per_row(original, _size(args), kwargs)
        return original(*args, **kwargs) if out is None else out

    return draw


def _like(
    sized: Callable[..., torch.Tensor], original: Callable[..., torch.Tensor]
) -> Callable[..., torch.Tensor]:
    def draw(t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        options = {
            "dtype": kwargs.get("dtype") or t.dtype,
            "device": kwargs.get("device") or t.device,
        }
        out = _per_row(sized, tuple(t.shape), options)
        return original(t, **kwargs) if out is None else out

    return draw


@contextlib.contextmanager
def batch(indices: list[int], epoch: int = 0) -> Iterator[None]:
    """Within the block (and :func:`per_sample_draws`), the batch trained on is the samples
    ``indices`` in ``epoch`` (what the patched loader says for a run)."""
    _current[0] = _Batch(list(indices), epoch)
    try:
        yield
    finally:
        _current[0] = None


@contextlib.contextmanager
def per_sample_draws() -> Iterator[None]:
    """Within the block, a training batch's random draws are per sample (module docstring)."""
    saved = {name: getattr(torch, name) for name in ("rand", "randn", "rand_like", "randn_like")}
    sample, iterate = ThreatModel.sample, InMemoryLoader.__iter__

    def per_sample(
        self: ThreatModel, x: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        current = _current[0]
        gens = None
        if current is not None and generator is None and isinstance(self.eps, float):
            gens = current.rows(len(x))
        if gens is None:
            return sample(self, x, generator=generator)
        return torch.cat([sample(self, x[i : i + 1], generator=g) for i, g in enumerate(gens)])

    def batches(self: InMemoryLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        try:
            for x, y in iterate(self):
                assert self.batch_indices is not None
                _current[0] = _Batch(self.batch_indices.tolist(), self.epoch)
                yield x, y
        finally:
            _current[0] = None

    torch.rand, torch.randn = _sized(saved["rand"]), _sized(saved["randn"])
    torch.rand_like = _like(saved["rand"], saved["rand_like"])
    torch.randn_like = _like(saved["randn"], saved["randn_like"])
    ThreatModel.sample = per_sample  # type: ignore[method-assign]
    InMemoryLoader.__iter__ = batches  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch, name, fn)
        ThreatModel.sample = sample  # type: ignore[method-assign]
        InMemoryLoader.__iter__ = iterate  # type: ignore[method-assign]
        _current[0] = None


# -- two training steps of a method with a term or a draw of the whole batch -------------------
#: the methods whose loss or attack reads the whole batch (NuAT's nuclear norm, N-AAER's share
#: and means of the abnormal examples, FGSM-PCO's gap of two batch means) or draws one value
#: for it (LIET's noise share and sign), and whether each half of the batch alone trains
#: otherwise in :func:`method_steps` (FGSM-PCO's halves have gaps of one sign there, as usual,
#: where the halves' ``|gap|`` average to the whole batch's)
BATCH_TERMS = {"nuat": True, "n-aaer": True, "fgsm-pco": False, "liet": True}
GLOBAL = 32  # images in the global batch of :func:`method_steps`


def method_norm(name: str) -> dict[str, Any]:
    """The norm and eps a method is compared under: L2 1.0, L-inf 0.1 for the L-inf-only."""
    norms = method_class(name).norms
    return {"norm": "l2", "eps": 1.0} if norms is None else {"norm": norms[0], "eps": 0.1}


class Wiggly(nn.Module):
    """A linear map of ``sin(30 x)``: the loss is far from linear at the eps scale (as after
    catastrophic overfitting), so single steps lower the loss of some images (N-AAER's
    abnormal examples; a small CNN at its initial weights has none)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        with torch.no_grad():
            self.linear.weight.mul_(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.sin(30 * x.flatten(1)))


def method_steps(name: str, rows: torch.Tensor, seed: int) -> list[dict[str, torch.Tensor]]:
    """Weight gradients and loss of two training steps of method ``name`` on the digits
    ``rows`` (of the first :data:`GLOBAL`), label smoothing 0.1: nuat's second step is
    guided, fgsm-pco's and liet's state carries over. Under a process group the weight update
    goes through DDP and the gradients are the ranks' mean. ``seed``: the random stream after
    the model is built (0: the one-process stream, which rank 0 keeps)."""
    data = load_dataset("digits")
    x, y = to_float(data.train_x[rows]), data.train_y[rows]
    torch.manual_seed(0)
    model: nn.Module = Wiggly()
    if seed:
        torch.manual_seed(seed)
    world = distributed.world_info_from_env()
    cpu = torch.device("cpu")
    model, train_model = wrap_for_training(model, world, cpu, sync_bn=False, compile_model=False)
    method = build_method(AttackConfig(method=name, **method_norm(name)))
    method.label_smoothing = 0.1
    method.start_epoch(1, 2)  # nuat: a regulariser weight > 0
    out = []
    for step in range(2):
        method.start_batch(rows, GLOBAL)
        with per_sample_draws(), batch(rows.tolist(), epoch=step):
            loss, _ = method.loss(train_model, model, x, y)
        model.zero_grad()
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        out.append(grads | {"loss": loss.detach().clone()})
    return out
