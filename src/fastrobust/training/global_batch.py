"""The global batch under DDP, for the methods whose loss or attack reads the whole batch.

Most methods' losses are means of per-sample terms: DDP's mean of the ranks' gradients is then
the gradient of the global batch's mean, and 2 ranks with half the batch each train as one
process does. A few methods define a term on the batch as a whole (NuAT's nuclear norm of the
batch's logit differences, N-AAER's share and means of its abnormal examples, FGSM-PCO's gap
of two batch means) or draw one value for the batch (LIET's noise share and sign). Under DDP
each rank would compute those on its own part of the batch; these helpers give every rank the
global batch's value instead, with small collectives (the ``B x K`` logits, a scalar). In one
process each is the identity, so a one-process run computes exactly what it did before.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.distributed as dist

from fastrobust import distributed


def _world() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` (``B x ...``, the same shape on every rank) with every rank's rows, in rank order:
    this rank's rows as given (gradients flow through them), the other ranks' detached. In one
    process, ``t`` itself. A term of the result differentiated on each rank gives each rank
    the gradient of the global batch's term through its own samples."""
    world = _world()
    if world == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.detach().contiguous())
    parts[dist.get_rank()] = t
    return torch.cat(parts)


def global_term(term: torch.Tensor) -> torch.Tensor:
    """A term of the weight update computed on :func:`gather_rows` of the batch: the same value,
    its gradient times the number of processes, since DDP averages the ranks' gradients while
    each rank's holds only its own samples' share of the global term's gradient."""
    world = _world()
    if world == 1:
        return term
    return term + (world - 1) * (term - term.detach())


def shared_draw(value: float) -> float:
    """Rank 0's ``value`` on every rank (a draw made once for the whole batch; rank 0's random
    stream is the one-process stream). Host to host: no device sync."""
    if _world() == 1:
        return value
    return cast(float, distributed.broadcast_object(value))
