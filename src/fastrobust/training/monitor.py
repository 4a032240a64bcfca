"""Catastrophic-overfitting monitor (Wong et al. 2020; Goodwin et al. 2020 discuss it for
fast training): PGD accuracy on a fixed training batch that suddenly falls far below its best
means the single-step attack stopped being a useful adversary.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

COLLAPSE_RATIO = 0.5  # PGD accuracy below this fraction of its best so far = collapse,
COLLAPSE_MIN_DROP = 0.2  # ... and at least this far below it (early epochs are noisy),
COLLAPSE_MIN_BEST = 0.2  # ... once the best is at least this


class OverfittingMonitor:
    """Watch the per-epoch PGD accuracy on a fixed training batch.

    ``update(acc)`` returns whether training collapsed. ``armed`` is False for methods that
    do not perturb (nothing can collapse). With ``keep_good_weights`` the weights of the
    best check so far are kept, and :meth:`restore` puts them back into ``model``.
    """

    def __init__(self, model: nn.Module, *, armed: bool, keep_good_weights: bool) -> None:
        self.model = model
        self.armed = armed
        self.keep_good_weights = keep_good_weights
        self.best = -1.0
        self.good_weights: dict[str, torch.Tensor] | None = None
        self._warned = False

    def update(self, acc: float, *, epoch: int) -> bool:
        """Record this epoch's check accuracy; True when it is a collapse."""
        if acc > self.best:
            self.best = acc
            if self.keep_good_weights:
                # on the CPU: no GPU memory held for them, and broadcast to the other ranks
                # they do not all land on the GPU of rank 0 (cuda:0)
                self.good_weights = {
                    k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
                }
            return False
        collapsed = (
            self.armed
            and self.best >= COLLAPSE_MIN_BEST
            and acc < COLLAPSE_RATIO * self.best
            and self.best - acc >= COLLAPSE_MIN_DROP
        )
        if collapsed:
            # warn once; with early stopping every collapse matters (it restores weights)
            log_fn = log.warning if not self._warned or self.keep_good_weights else log.info
            self._warned = True
            log_fn(
                "catastrophic overfitting suspected at epoch %d: PGD accuracy on a fixed "
                "training batch fell to %.3f (best %.3f)%s",
                epoch,
                acc,
                self.best,
                "; restoring the last good weights" if self.keep_good_weights else "",
            )
        return collapsed

    def restore(self, weights: dict[str, torch.Tensor] | None = None) -> None:
        """Load the kept good weights (or ``weights``, e.g. broadcast from rank 0)."""
        weights = self.good_weights if weights is None else weights
        if weights:
            self.model.load_state_dict(weights)

    def state_dict(self) -> dict[str, Any]:
        return {"best_check": self.best, "good_state": self.good_weights or {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.best = float(state["best_check"])
            self.good_weights = state["good_state"] or None
