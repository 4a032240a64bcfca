"""Shared fixtures: the digits data and small trained runs (seconds on 2 CPU cores)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fastrobust.data import load_dataset
from fastrobust.data.base import to_float
from fastrobust.training.config import TrainConfig
from fastrobust.training.trainer import fit

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits as a fastrobust ImageDataset."""
    return load_dataset("digits")


def tiny_config(tmp: Path, **overrides) -> TrainConfig:
    """A few-epoch digits config for tests."""
    base = dict(
        epochs=2,
        batch_size=128,
        out_dir=str(tmp),
        progress=False,
        eval_limit=100,
        eval_steps=3,
        overfit_check_size=64,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """Run folders of small_cnn models trained on digits: ``standard`` and ``fast`` (L2, eps 1)."""
    root = tmp_path_factory.mktemp("trained")
    runs = {}
    for method in ("standard", "fast"):
        cfg = tiny_config(root, method=method, epochs=15, name=method, eval_every=5)
        runs[method] = fit(cfg).run_dir
    return runs


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny models on one thread, then restore the count.

    Models this small gain nothing from a second thread, and on a busy 2-core machine two
    OpenMP threads spin-wait for each other: measured 6x slower (20-step PGD, digits, small_cnn).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_mlp(
    digits, seed: int = 0, *, hidden: int = 48, batch_norm: bool = False, steps: int = 150
) -> nn.Module:
    """A small MLP trained for a second on the digits: accurate, not robust."""
    torch.manual_seed(seed)
    norm = [nn.BatchNorm1d(hidden)] if batch_norm else []
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(64, hidden), *norm, nn.ReLU(), nn.Linear(hidden, 10)
    )
    x, y = to_float(digits.train_x), digits.train_y
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.zero_grad(set_to_none=True)
    return net.eval()


class GradientCounter(nn.Module):
    """Counts the samples of every forward pass an input gradient can flow through."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.attacked = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            self.attacked += x.shape[0]
        return self.net(x)


def small_bn_cnn(seed: int = 0) -> nn.Module:
    """An untrained CNN with BatchNorm and dropout for 1x8x8 images (10 classes)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )


@pytest.fixture(scope="session")
def mlp(digits) -> nn.Module:
    return train_mlp(digits)


@pytest.fixture(scope="session")
def points(digits) -> tuple[torch.Tensor, torch.Tensor]:
    return to_float(digits.test_x[:70]), digits.test_y[:70]


@pytest.fixture(scope="session")
def bn_mlp(digits) -> nn.Module:
    """A small MLP with BatchNorm trained on the digits (attack invariant and strength tests)."""
    return train_mlp(digits, batch_norm=True)


@pytest.fixture(scope="session")
def one_epoch_run(tmp_path_factory) -> Path:
    """A 1-epoch fast-L2 small_cnn digits run folder (seconds): for tests that need any
    trained run (trackers, export), not a good model."""
    root = tmp_path_factory.mktemp("one_epoch")
    cfg = tiny_config(root, epochs=1, name="fast", eval_limit=50, eval_steps=2)
    return fit(cfg).run_dir


def interrupt_second_epoch(monkeypatch) -> Callable[..., Any]:
    """Make the next run stop with a KeyboardInterrupt (Ctrl-C) as its second epoch starts;
    returns the real ``EpochTrainer.train_epoch`` to put back before resuming."""
    from fastrobust.training.epoch import EpochTrainer

    original = EpochTrainer.train_epoch
    calls = {"n": 0}

    def interrupt(self, epoch, total):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, epoch, total)

    monkeypatch.setattr(EpochTrainer, "train_epoch", interrupt)
    return original
