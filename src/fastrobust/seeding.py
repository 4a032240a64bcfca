"""One seed per run, split into named random streams (see docs/architecture.md).

Every random choice of a training run comes from one stream below, each derived from the
run's ``seed`` and named after what it decides, so no two parts of the code share or
accidentally reuse a generator, and a stream can change without moving the others:

========================  =====================================================================
stream                    decides
========================  =====================================================================
``weights``               torch's global generator before the model is built: initial weights,
                          then rank 0's random starts (training attacks)
``random_starts(rank)``   torch's global generator of every other rank (its random starts)
``sample_order``          the ``DistributedSampler`` seed (it adds the epoch itself)
``augmentation(epoch)``   crop offsets and flips of every training sample in one epoch, drawn
                          in one go, so the in-memory and the disk loader crop alike
``subsets``               the class-stratified subsets (:mod:`fastrobust.data.subsets`):
                          the validation images under ``eval_limit`` and the training images
                          the overfitting monitor checks (``legacy_overfit_batch``: the latter
                          in runs recorded before, resumed with ``subsets: legacy``)
``between_epochs(epoch)`` overfitting check and validation (forked, so they leave training's
                          streams untouched)
``best_epoch_test(e)``    the random starts of the best epoch's weights measured on the whole
                          test set at the end of a run (forked likewise)
========================  =====================================================================

Derivation: ``random_starts`` comes from :func:`derive_seed`, a
:class:`numpy.random.SeedSequence` of the seed, the stream's id and its arguments (attack
restarts draw their starts the same way, :mod:`fastrobust.attacks.restarts`). The streams a
one-process run uses keep the integer seeds they had before this module gathered them
(``seed``, ``seed*100003+epoch+1``, ``seed+12345``, ``seed*7919+epoch``; the subsets use
``seed`` itself, so ``eval --seed S --limit N`` evaluates the images a run of seed ``S``
validated on under ``--eval-limit N``), so runs recorded
earlier, and tests/fixtures/default_job_reference.json, reproduce bitwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: stream id in the ``derive_seed`` key of the per-rank random starts
RANDOM_STARTS_STREAM = 0x52414E4B
#: stream id of the best epoch's test-set measurement at the end of a run
BEST_EPOCH_TEST_STREAM = 0x42455354


def derive_seed(*key: int) -> int:
    """A generator seed for the stream named by the integer tuple ``key`` (a
    :class:`numpy.random.SeedSequence` of it): equal on every process, independent of every
    other key's of the same length (SeedSequence ignores trailing zeros, so every stream keeps
    one key length). Attack restarts key it by (seed, chunk, eps, attack, restart)."""
    state = np.random.SeedSequence(list(key))
    return int(state.generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class RunSeeds:
    """The named random streams of one run (the table in this module's docstring)."""

    seed: int

    def weights(self) -> int:
        return self.seed

    def random_starts(self, rank: int, epoch: int = 0) -> int:
        """Rank ``rank``'s own stream (``epoch``: resumed there on another process count)."""
        return derive_seed(self.seed, RANDOM_STARTS_STREAM, rank, epoch)

    def sample_order(self) -> int:
        return self.seed

    def augmentation(self, epoch: int) -> torch.Generator:
        return generator(self.seed * 100_003 + epoch + 1)

    def subsets(self) -> int:
        return self.seed

    def legacy_overfit_batch(self) -> int:
        return self.seed + 12_345

    def between_epochs(self, epoch: int) -> int:
        return self.seed * 7919 + epoch

    def best_epoch_test(self, epoch: int) -> int:
        return derive_seed(self.seed, BEST_EPOCH_TEST_STREAM, epoch, 0)
