"""``pgd``'s step size defaults to the PGD rule (2.5 * eps / steps, Madry et al. 2018)."""

from __future__ import annotations

import torch
from torch import nn

import fastrobust as fr
from fastrobust.attacks.contract import pgd_step_size


def test_pgd_default_step_size_is_the_pgd_rule():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    threat = fr.L2(0.5)
    start = threat.sample(x, generator=torch.Generator().manual_seed(1))
    default = fr.pgd(model, x, y, threat, steps=4, start=start)
    explicit = fr.pgd(model, x, y, threat, steps=4, step_size=pgd_step_size(0.5, 4), start=start)
    other = fr.pgd(model, x, y, threat, steps=4, step_size=0.01, start=start)
    assert torch.equal(default, explicit)
    assert not torch.equal(default, other)
