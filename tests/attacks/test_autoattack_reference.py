"""Cross-checks against the reference AutoAttack implementation (``pyautoattack`` 0.2.0).

On the session's fast-trained digits model (L2, eps 1) and the same test points, each attack
alone must leave at most the reference's robust accuracy plus a tolerance, and must fool most
of the points the reference fools (the agreement is printed with ``-s``):

* FAB-T starts from the clean point (no randomness on either side), so only floating-point
  detail separates the two: tolerance 1 point, agreement >= 90%.
* APGD-CE and APGD-T start from random points drawn differently on each side: tolerance 5%
  of the points, agreement >= 85%.
* AutoAttack's standard version (the cascade): tolerance 5% of the points.
* Square is a random search with different random streams (the reference draws one window
  for the whole batch, this package one per sample): on a given point either run may or may
  not find an adversarial example, so the tolerance is 5% of the points.

The default run uses reduced budgets on 64 points (same budgets on both sides); the slow run
uses AutoAttack's budgets on 100 points.
"""

from __future__ import annotations

import pytest
import torch

from fastrobust.attacks.apgd import apgd, apgd_targeted
from fastrobust.attacks.fab import fab
from fastrobust.attacks.square import square
from fastrobust.attacks.threat import L2, Linf
from fastrobust.checkpoint import load_model
from fastrobust.data.base import to_float
from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import robustness_curve
from masked_models import Quantised

reference = pytest.importorskip(
    "pyautoattack",
    reason="the cross-check needs the reference: pip install --no-deps pyautoattack==0.2.0",
    exc_type=ImportError,
)
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted  # noqa: E402
from pyautoattack.fab_pt import FABAttack_PT  # noqa: E402
from pyautoattack.square import SquareAttack  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest
THREATS = {"Linf": Linf(0.15), "L2": L2(1.0)}
FAST = {"n": 64, "fab_targets": 3, "fab_steps": 30, "queries": 300, "apgd_steps": 20}
FULL = {"n": 100, "fab_targets": 9, "fab_steps": 100, "queries": 5000, "apgd_steps": 100}


@pytest.fixture(scope="module")
def fast_model(trained_runs):
    return load_model(trained_runs["fast"]).eval()


def _robust(model, x_adv, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def _compare(name, ours: torch.Tensor, theirs: torch.Tensor, tolerance: int) -> None:
    fooled_by_them = ~theirs
    agreement = float((~ours[fooled_by_them]).float().mean()) if fooled_by_them.any() else 1.0
    print(
        f"{name}: robust {int(ours.sum())} (fastrobust) vs {int(theirs.sum())} (reference) of "
        f"{len(ours)}; fastrobust fools {agreement:.0%} of the points the reference fools"
    )
    assert int(ours.sum()) <= int(theirs.sum()) + tolerance
    return agreement


def _fab_t(model, digits, norm, budget):
    threat = THREATS[norm]
    x, y = to_float(digits.test_x[: budget["n"]]), digits.test_y[: budget["n"]]
    found = fab(model, x, y, threat, targets=budget["fab_targets"], steps=budget["fab_steps"],
                enough=threat.eps)  # fmt: skip
    ours = _robust(model, x, y) & ~found.fooled_at(threat.eps)
    peer = FABAttack_PT(model, norm=norm, n_restarts=1, n_iter=budget["fab_steps"],
                        eps=threat.eps, seed=0, targeted=True,
                        n_target_classes=budget["fab_targets"])  # fmt: skip
    x_ref = peer.perturb(x, y)
    theirs = _robust(model, x_ref, y) | (threat.norm(x_ref - x) > threat.eps)
    agreement = _compare(f"FAB-T {norm} eps {threat.eps:g}", ours, theirs, tolerance=1)
    assert agreement >= 0.9


def _square(model, digits, norm, budget) -> tuple[torch.Tensor, torch.Tensor]:
    threat = THREATS[norm]
    x, y = to_float(digits.test_x[: budget["n"]]), digits.test_y[: budget["n"]]
    g = torch.Generator().manual_seed(0)
    ours = _robust(model, square(model, x, y, threat, queries=budget["queries"], generator=g), y)
    peer = SquareAttack(model, p_init=0.8, n_queries=budget["queries"], eps=threat.eps,
                        norm=norm, n_restarts=1, seed=0, resc_schedule=False)  # fmt: skip
    x_ref = peer.perturb(x, y)
    assert threat.contains(x_ref - x, x).all()
    theirs = _robust(model, x_ref, y)
    _compare(f"Square {norm} eps {threat.eps:g}", ours, theirs, tolerance=round(0.05 * len(y)))
    return ours, theirs


@pytest.mark.parametrize("norm", THREATS)
def test_fab_t_matches_reference(fast_model, digits, norm):
    _fab_t(fast_model, digits, norm, FAST)


@pytest.mark.parametrize("norm", THREATS)
def test_square_matches_reference(fast_model, digits, norm):
    _square(fast_model, digits, norm, FAST)


@pytest.mark.slow
@pytest.mark.parametrize("norm", THREATS)
def test_fab_t_matches_reference_full_budget(fast_model, digits, norm):
    _fab_t(fast_model, digits, norm, FULL)


@pytest.mark.slow
@pytest.mark.parametrize("norm", THREATS)
def test_square_matches_reference_full_budget(fast_model, digits, norm):
    _square(fast_model, digits, norm, FULL)


@pytest.mark.parametrize("norm", THREATS)
def test_square_through_masked_gradients_as_far_as_reference(fast_model, digits, norm):
    """Behind zero-gradient input quantisation APGD-CE fools almost nothing, while Square
    (ours and the reference's alike) still finds the adversarial examples."""
    masked = Quantised(fast_model).eval()
    threat = THREATS[norm]
    x, y = to_float(digits.test_x[: FAST["n"]]), digits.test_y[: FAST["n"]]
    torch.manual_seed(0)
    by_gradient = _robust(masked, apgd(masked, x, y, threat, steps=20), y)
    ours, theirs = _square(masked, digits, norm, FAST)
    print(f"  APGD-CE leaves {int(by_gradient.sum())} robust")
    assert int(ours.sum()) < int(by_gradient.sum()) - 0.2 * len(y)


def _apgd(model, digits, norm, budget, targeted: bool):
    threat = THREATS[norm]
    x, y = to_float(digits.test_x[: budget["n"]]), digits.test_y[: budget["n"]]
    g = torch.Generator().manual_seed(0)
    steps = budget["apgd_steps"]
    if targeted:
        x_ours = apgd_targeted(model, x, y, threat, targets=budget["fab_targets"], steps=steps,
                               generator=g)  # fmt: skip
        peer = APGDAttack_targeted(model, n_restarts=1, n_iter=steps, eps=threat.eps, norm=norm,
                                   seed=0, device="cpu")  # fmt: skip
        peer.n_target_classes = budget["fab_targets"]
    else:
        x_ours = apgd(model, x, y, threat, steps=steps, generator=g)
        peer = APGDAttack(model, n_restarts=1, n_iter=steps, eps=threat.eps, norm=norm, seed=0,
                          loss="ce", device="cpu")  # fmt: skip
    ours, theirs = _robust(model, x_ours, y), _robust(model, peer.perturb(x, y), y)
    name = "APGD-T" if targeted else "APGD-CE"
    agreement = _compare(f"{name} {norm} eps {threat.eps:g}", ours, theirs,
                         tolerance=round(0.05 * len(y)))  # fmt: skip
    assert agreement >= 0.85


@pytest.mark.parametrize("norm", THREATS)
@pytest.mark.parametrize("targeted", [False, True], ids=["apgd-ce", "apgd-t"])
def test_apgd_matches_reference(fast_model, digits, norm, targeted):
    _apgd(fast_model, digits, norm, FAST, targeted)


@pytest.mark.slow
@pytest.mark.parametrize("norm", THREATS)
@pytest.mark.parametrize("targeted", [False, True], ids=["apgd-ce", "apgd-t"])
def test_apgd_matches_reference_full_budget(fast_model, digits, norm, targeted):
    _apgd(fast_model, digits, norm, FULL, targeted)


@pytest.mark.slow
@pytest.mark.parametrize("norm", THREATS)
def test_standard_autoattack_matches_reference(fast_model, digits, norm):
    """The whole standard version, AutoAttack's budgets, at one eps on the same 100 points."""
    threat = THREATS[norm]
    x, y = to_float(digits.test_x[:100]), digits.test_y[:100]
    curve = robustness_curve(
        fast_model,
        (x, y),
        norm.lower(),
        [threat.eps],
        CurveSettings(attacks="autoattack", checks=False),
    )
    ours = curve.robust_mask[0]
    peer = reference.AutoAttack(fast_model, norm=norm, eps=threat.eps, version="standard", seed=0)
    x_ref, _ = peer.run_standard_evaluation(x, y, batch_size=250)
    theirs = _robust(fast_model, x_ref, y)
    _compare(f"AutoAttack standard {norm} eps {threat.eps:g}", ours, theirs,
             tolerance=round(0.05 * len(y)))  # fmt: skip
    print(f"  fastrobust fooled first by: {curve.fooled_by[0]}")
