"""The one way the project takes part of a split: a seeded, class-stratified sample.

Image folders list their files class by class, so "the first N images" of a split can be one
or two classes only, and any accuracy measured on them says little about the model. Every
subset the project takes (the validation limit, ``eval --limit``, the training batch the
overfitting monitor checks, the visualisation pool, the samples the gradient-masking checks
re-attack) is drawn by :func:`stratified_subset` instead:

* each class gets its share of ``n`` in proportion to its size in the split, rounded by the
  largest-remainder (Hamilton) method: every class first gets ``floor(n * N_c / N)``, and the
  images still missing go one each to the classes with the largest fractional parts (ties to
  the lower class index), so the counts add up to exactly ``n``;
* within a class the images are uniformly random: one ``torch.randperm`` of the whole split
  from a generator seeded by ``seed``, each class taking its first ``n_c`` images in that
  order. The same labels, ``n`` and ``seed`` always give the same indices (another seed, other
  images), on any machine and for any number of processes.

The indices come back in ascending order, so a subset of a disk dataset is read in file order.
:class:`SubsetRecord` is what runs and reports write down about a subset.

Runs recorded before subsets were stratified validated on the first ``eval_limit`` test images
and checked overfitting on the first images of a seeded random permutation of the training
split; :func:`sample_split` still draws those (rules ``first`` and ``random``) so such runs
resume exactly as they would have gone on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fastrobust.errors import ConfigError


def class_allocation(labels: torch.Tensor, n: int) -> dict[int, int]:
    """Class -> number of the ``n`` sampled images, proportional to the class sizes in
    ``labels`` (largest remainders; the counts add up to ``min(n, len(labels))``)."""
    classes, sizes = torch.unique(labels.cpu(), return_counts=True)
    total = int(sizes.sum())
    n = min(n, total)
    share = {int(c): (n * int(s)) // total for c, s in zip(classes, sizes)}
    remainder = {int(c): (n * int(s)) % total for c, s in zip(classes, sizes)}
    missing = n - sum(share.values())
    for c in sorted(remainder, key=lambda c: (-remainder[c], c))[:missing]:
        share[c] += 1
    return share


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Ascending indices of a seeded, class-stratified sample of ``n`` of ``labels``
    (all indices when ``n >= len(labels)``); see the module docstring for the rule."""
    if n < 0:
        raise ConfigError(f"a subset needs n >= 0, got {n}")
    labels = labels.cpu()
    total = len(labels)
    if n >= total:
        return torch.arange(total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    ordered_labels = labels[order]
    picked = [
        order[ordered_labels == c][:count]
        for c, count in class_allocation(labels, n).items()
        if count
    ]
    if not picked:
        return torch.empty(0, dtype=torch.long)
    return torch.cat(picked).sort().values


@dataclass(frozen=True)
class SubsetRecord:
    """What a run or report records about one subset: enough to draw it again (seed, n,
    split size) and to see at a glance that every class is in it (per-class counts)."""

    split: str
    """which split it was taken from (``train``, ``test``, or ``given`` for user tensors)"""
    rule: str
    """how it was drawn (:data:`RULES`)"""
    seed: int
    n: int
    n_available: int
    per_class: dict[int, int] = field(default_factory=dict)
    """class index -> images of that class in the subset"""
    indices: list[int] | None = None
    """the chosen indices into the split (``None`` when the subset is the whole split)"""

    @property
    def is_whole_split(self) -> bool:
        return self.n >= self.n_available

    def index_tensor(self) -> torch.Tensor:
        """The indices into the split as a tensor (every index for the whole split)."""
        if self.indices is None:
            return torch.arange(self.n_available)
        return torch.tensor(self.indices, dtype=torch.long)

    def describe(self) -> str:
        """``"a class-stratified sample of 200 of 360 test points (seed 0)"`` or
        ``"all 360 test points"``."""
        what = "test points" if self.split == "test" else f"{self.split} points"
        if self.is_whole_split:
            return f"all {self.n} {what}"
        if self.rule == "first":
            return f"the first {self.n} of {self.n_available} {what}"
        kind = "class-stratified" if self.rule == "stratified" else "random"
        return f"a {kind} sample of {self.n} of {self.n_available} {what} (seed {self.seed})"

    def to_dict(self, *, with_indices: bool = True) -> dict[str, Any]:
        """JSON-ready; ``with_indices=False`` gives the compact form (seed, n, per-class)."""
        d: dict[str, Any] = {
            "split": self.split,
            "rule": self.rule,
            "seed": self.seed,
            "n": self.n,
            "n_available": self.n_available,
            "per_class": {str(c): k for c, k in self.per_class.items()},
        }
        if with_indices and self.indices is not None:
            d["indices"] = list(self.indices)
        return d


#: how :func:`sample_split` draws: ``stratified`` (:func:`stratified_subset`, the rule of every
#: subset) or, for runs recorded before it, ``first`` (the first n) and ``random`` (the first n
#: of a ``torch.randperm`` from the seed, in that order)
RULES = ("stratified", "first", "random")


def sample_split(
    labels: torch.Tensor, n: int | None, seed: int, *, split: str, rule: str = "stratified"
) -> SubsetRecord:
    """The subset of ``n`` images of a split (``None``: the whole split) drawn by ``rule``
    (:data:`RULES`), as a :class:`SubsetRecord`."""
    if rule not in RULES:
        raise ConfigError(f"unknown subset rule {rule!r}; choose one of {', '.join(RULES)}")
    total = len(labels)
    whole = n is None or n >= total
    if n is None or whole:
        idx = torch.arange(total)
    elif rule == "stratified":
        idx = stratified_subset(labels, n, seed)
    elif rule == "first":
        idx = torch.arange(n)
    else:
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    classes, counts = torch.unique(labels.cpu()[idx], return_counts=True)
    return SubsetRecord(
        split=split,
        rule=rule,
        seed=seed,
        n=len(idx),
        n_available=total,
        per_class={int(c): int(k) for c, k in zip(classes, counts)},
        indices=None if whole else [int(i) for i in idx],
    )
