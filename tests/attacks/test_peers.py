"""Cross-checks against an independent implementation (torchattacks, the ``peers`` extra).

On the fast-trained digits model, this package's attacks must be no weaker than torchattacks'
with the same budget: PGD-L2 from zero within one sample; with random restarts (whose starts
differ between the two) PGD-L2 and APGD-CE within 2% of the points, as runs of either vary by a
few points (seen here: 35 vs 33 of 200 robust, depending on the fixture model's thread count).
"""

from __future__ import annotations

import pytest
import torch

from fastrobust.attacks.apgd import apgd
from fastrobust.attacks.contract import pgd_step_size
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.threat import threat_model
from fastrobust.checkpoint import load_model
from fastrobust.data.base import to_float
from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import robustness_curve

torchattacks = pytest.importorskip(
    "torchattacks",
    reason="peer cross-check needs torchattacks: pip install 'fastrobust[peers]' "
    "(or pip install --no-deps torchattacks where torchvision is unavailable)",
    exc_type=ImportError,  # also when it is installed but cannot import (e.g. torchvision)
)

STEPS = 20
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def setup(trained_runs, digits):
    model = load_model(trained_runs["fast"])
    x, y = to_float(digits.test_x[:200]), digits.test_y[:200]
    return model, x, y


def _robust(model, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def test_pgd_l2_from_zero_matches_torchattacks(setup):
    model, x, y = setup
    eps = 1.0
    threat = threat_model("l2", eps)
    step = pgd_step_size(eps, STEPS)
    zero = torch.zeros_like(x)
    ours = _robust(model, pgd(model, x, y, threat, steps=STEPS, step_size=step, start=zero), y)
    peer = torchattacks.PGDL2(
        model, eps=eps, alpha=2.5 * eps / STEPS, steps=STEPS, random_start=False
    )
    theirs = _robust(model, peer(x, y), y)
    assert int(ours.sum()) <= int(theirs.sum()) + 1, (int(ours.sum()), int(theirs.sum()))


def test_pgd_l2_curve_with_restarts_no_weaker_than_torchattacks(setup):
    model, x, y = setup
    eps_list, restarts = [1.0], 5
    curve = robustness_curve(
        model,
        (x, y),
        "l2",
        eps_list,
        CurveSettings(steps=STEPS, restarts=restarts, random_start="radius", checks=False),
    )
    torch.manual_seed(0)
    for j, eps in enumerate(eps_list):
        peer = torchattacks.PGDL2(model, eps=eps, alpha=2.5 * eps / STEPS, steps=STEPS)
        theirs = _robust(model, x, y)
        for _ in range(restarts):
            theirs &= _robust(model, peer(x, y), y)
        slack = max(1, round(0.02 * len(y)))  # the random starts differ: see the module docstring
        assert curve.robust[j] <= int(theirs.sum()) + slack, (
            eps,
            curve.robust[j],
            int(theirs.sum()),
        )


def test_apgd_ce_no_weaker_than_torchattacks(setup):
    model, x, y = setup
    eps, restarts = 1.0, 3
    torch.manual_seed(0)
    ours = _robust(
        model, apgd(model, x, y, threat_model("l2", eps), steps=STEPS, restarts=restarts), y
    )
    peer = torchattacks.APGD(
        model, norm="L2", eps=eps, steps=STEPS, n_restarts=restarts, loss="ce", seed=0
    )
    theirs = _robust(model, peer(x, y), y)
    assert int(ours.sum()) <= int(theirs.sum()) + max(1, len(y) // 50), (
        int(ours.sum()),
        int(theirs.sum()),
    )
