"""Independent judges for the perceptual-alignment score: which class does an image show?

Goodwin et al. (HPEC 2020, Figure 5) judge large targeted perturbations by eye: a robust
model's perturbation draws the target class, a standard model's is noise. To turn that into a
number the judge must be independent of the models under study and hard to fool with their
adversarial noise:

* :class:`KnnJudge`: k-nearest neighbours on raw pixels of the training split (L2 distance,
  majority vote, ties to the nearest). It has no gradients to transfer an attack through, so it
  only says "target" when the image has moved toward training images of the target.
* :class:`ModelJudge`: a classifier of a *different* architecture trained by the study with
  standard training on the same split (default: :func:`mlp`, a multi-layer perceptron, against
  the convolutional models under study). It sees like a network, but adversarial noise partly
  transfers to it (measured on digits: a standard model's targeted perturbations at L2 eps 2
  were called "the target" 62-74% of the time by an independent standard CNN, 48-53% by a
  pixel 5-NN), so its score is an upper estimate for standard models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from fastrobust.errors import ConfigError

#: short judge names the study config accepts, and the model factory each trains (the
#: study rebuilds these itself when loading a judge; see ``stages.load_judge``)
JUDGE_MODELS = {"mlp": "fastrobust.study.judges:mlp"}


class Judge(Protocol):
    """Anything that labels ``[0,1]`` images: ``judge(x) -> classes``."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def mlp(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Two hidden layers of 256 units on the flattened image: a judge that shares no
    convolutional structure with the models under study."""
    d = in_channels * image_size * image_size
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, 256),
        nn.ReLU(inplace=True),
        nn.Linear(256, 256),
        nn.ReLU(inplace=True),
        nn.Linear(256, num_classes),
    )


@dataclass
class KnnJudge:
    """k-nearest neighbours on pixels: the class most common among the ``k`` training images
    closest in L2 distance (ties go to the class of the nearest of the tied)."""

    train_x: torch.Tensor
    """training images, N x C x H x W in ``[0,1]``"""
    train_y: torch.Tensor
    k: int = 5
    chunk: int = 256

    def __post_init__(self) -> None:
        if self.k < 1 or self.k > len(self.train_y):
            raise ConfigError(f"k-NN judge: k must be in 1..{len(self.train_y)}, got {self.k}")
        self._flat = self.train_x.flatten(1).float()
        self._classes = int(self.train_y.max()) + 1

    @property
    def name(self) -> str:
        return f"knn-{self.k}"

    @property
    def description(self) -> str:
        return f"{self.k}-nearest neighbours on pixels ({len(self.train_y)} training images)"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        train = self._flat.to(x.device)
        labels = self.train_y.to(x.device)
        for lo in range(0, x.shape[0], self.chunk):
            q = x[lo : lo + self.chunk].flatten(1).float()
            dist = torch.cdist(q, train)
            nearest = dist.topk(self.k, largest=False).indices  # sorted nearest first
            votes = labels[nearest]
            counts = torch.zeros(q.shape[0], self._classes, device=x.device)
            counts.scatter_add_(1, votes, torch.ones_like(votes, dtype=counts.dtype))
            # tie-break toward the nearest: a vote from rank r adds 1 - r * 1e-3 / k
            rank_bonus = -(torch.arange(self.k, device=x.device) * 1e-3 / self.k)
            bonus = torch.zeros_like(counts).scatter_add_(
                1, votes, rank_bonus.expand_as(votes).contiguous()
            )
            out.append((counts + bonus).argmax(1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


@dataclass
class ModelJudge:
    """A trained classifier (eval mode, no gradients) as a judge."""

    model: nn.Module
    name: str
    description: str
    batch: int = 512

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            return torch.cat(
                [
                    self.model(x[lo : lo + self.batch]).argmax(1)
                    for lo in range(0, len(x), self.batch)
                ]
            )
        finally:
            self.model.train(was_training)


def judge_accuracy(judge: Judge, x: torch.Tensor, y: torch.Tensor) -> float:
    """Clean accuracy of a judge on labelled images (reported next to every score)."""
    return float((judge(x) == y.to(x.device)).float().mean()) if len(y) else float("nan")
