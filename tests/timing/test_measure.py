"""Timing analysis (Goodwin et al. 2020, Figure 1): estimator invariants on synthetic cost
curves and the measurement's structure (never its speed)."""

from __future__ import annotations

import math

import pytest
import torch

from fastrobust.attacks.threat import L2
from fastrobust.errors import ConfigError
from fastrobust.models import ModelSpec, build_model
from fastrobust.timing import measure

pytestmark = pytest.mark.usefixtures("one_thread")
SIZES = [32, 64, 128, 256, 512]


def synthetic(per_image: float = 1e-4, fixed: float = 2e-3, steps=(1, 7)) -> measure.TimingCurves:
    """Costs that are affine in the batch (fixed launch cost + per-image cost), with an
    attack step costing two forward-equivalents and a training step three."""
    curves = measure.TimingCurves(device="synthetic", model="m", image_shape=(3, 32, 32))

    def forward(b: int) -> float:
        return fixed + per_image * b

    for b in SIZES:
        curves.rows.append(measure.Measurement(measure.FORWARD, b, forward(b), forward(b), 1))
        curves.rows.append(
            measure.Measurement(measure.TRAIN_STEP, b, 3 * forward(b), 3 * forward(b), 1)
        )
        for k in steps:
            t = (0.5 + 2 * k) * forward(b)
            curves.rows.append(measure.Measurement(measure.attack_op(k), b, t, t, 1))
    return curves


def proportional(c: float = 1e-4) -> measure.TimingCurves:
    """Every operation costs the same per image at every batch size."""
    curves = measure.TimingCurves(device="synthetic", model="m", image_shape=(3, 32, 32))
    for b in SIZES:
        for op, mult in ((measure.FORWARD, 1), (measure.TRAIN_STEP, 3), ("pgd1", 2), ("pgd7", 14)):
            curves.rows.append(measure.Measurement(op, b, mult * c * b, mult * c * b, 1))
    return curves


CIFAR = measure.Schedule(
    train_size=50_000, val_size=10_000, epochs=15, eval_every=1, check_size=256
)


# -- curves ---------------------------------------------------------------------------------------
def test_curve_is_exact_at_measured_points_and_monotone_between():
    c = synthetic()
    for b in SIZES:
        assert c.seconds(measure.FORWARD, b) == pytest.approx(2e-3 + 1e-4 * b)
    xs = [32 + 7 * i for i in range(70)]
    ys = [c.seconds(measure.FORWARD, x) for x in xs]
    assert all(a < b for a, b in zip(ys, ys[1:]))
    # outside the measured range: the nearest end's cost per image
    assert c.seconds(measure.FORWARD, 1024) == pytest.approx(2 * c.seconds(measure.FORWARD, 512))
    assert c.seconds(measure.FORWARD, 16) == pytest.approx(c.seconds(measure.FORWARD, 32) / 2)
    assert c.ops() == [measure.FORWARD, measure.TRAIN_STEP, "pgd1", "pgd7"]


def test_attack_cost_is_affine_in_steps():
    c = synthetic()
    b = 128
    f = c.seconds(measure.FORWARD, b)
    assert c.attack_seconds(0, b) == 0.0
    assert c.attack_seconds(1, b) == pytest.approx(2.5 * f)
    assert c.attack_seconds(10, b) == pytest.approx(20.5 * f)  # extrapolated from K = 1, 7
    assert c.attack_seconds(3, b) == pytest.approx(6.5 * f)  # interpolated
    one = synthetic(steps=(7,))
    assert one.attack_seconds(14, b) == pytest.approx(2 * one.attack_seconds(7, b))
    with pytest.raises(ConfigError, match="no measurement"):
        measure.TimingCurves("d", "m", (1, 1, 1)).seconds(measure.FORWARD, 4)


def test_curves_round_trip_through_csv(tmp_path):
    c = synthetic()
    c.to_csv(tmp_path / "m.csv")
    back = measure.TimingCurves.from_csv(tmp_path / "m.csv")
    assert sorted(back.rows, key=lambda r: (r.op, r.batch_size)) == sorted(
        c.rows, key=lambda r: (r.op, r.batch_size)
    )


# -- estimator ------------------------------------------------------------------------------------
def test_validations_follow_the_engine_schedule():
    assert measure.Schedule(100, 10, epochs=12, eval_every=5).validations == 3  # 5, 10 and the last
    assert measure.Schedule(100, 10, epochs=10, eval_every=5).validations == 2
    assert measure.Schedule(100, 10, epochs=4, eval_every=1).validations == 4
    with pytest.raises(ConfigError):
        measure.Schedule(0, 10, epochs=1)


def test_estimate_matches_a_hand_count_for_constant_cost_per_image():
    c, n, epochs = proportional(1e-4), 50_000, 15
    s = measure.Schedule(train_size=n, val_size=0, epochs=epochs, check_size=0)
    for k, mult in ((0, 3), (1, 3 + 2), (7, 3 + 14)):
        for gpus in (1, 2, 4, 8):
            e = measure.estimate_training_time(c, s, attack_steps=k, global_batch=512, gpus=gpus)
            assert e.train_s == pytest.approx(epochs * math.ceil(n / gpus) * mult * 1e-4)
            assert e.val_s == 0.0
            assert e.method == {0: "standard", 1: "fast", 7: "pgd7"}[k]


def test_more_attack_steps_cost_more():
    c = synthetic()
    totals = [
        measure.estimate_training_time(c, CIFAR, attack_steps=k, global_batch=512).total_s
        for k in (0, 1, 7, 10)
    ]
    assert all(a < b for a, b in zip(totals, totals[1:]))
    fast, pgd7 = totals[1], totals[2]
    assert pgd7 / fast > 2  # K-step PGD's floor is about (3 + 2K) / (3 + 2)


def test_more_gpus_never_slower_and_never_superlinear():
    c = synthetic()
    for k in (0, 1, 7):
        est = measure.sweep_gpus(c, CIFAR, methods=[k], global_batch=512, gpus=[1, 2, 4, 8, 16])
        assert [e.gpus for e in est] == [1, 2, 4, 8, 16]
        totals = [e.total_s for e in est]
        assert all(a >= b for a, b in zip(totals, totals[1:]))
        for e in est:  # per-image cost only grows as the per-GPU batch shrinks
            assert e.train_s >= est[0].train_s / e.gpus * (1 - 1e-9)
        assert est[-1].train_s > est[0].train_s / 16 * 1.05  # small batches are inefficient


def test_larger_batches_train_faster_on_one_gpu():
    c = synthetic()
    est = measure.sweep_batch_sizes(c, CIFAR, methods=[1], batch_sizes=SIZES)
    trains = [e.train_s for e in est]
    assert [e.global_batch for e in est] == SIZES
    assert all(a > b for a, b in zip(trains, trains[1:]))


def test_validation_cost_scales_with_its_schedule():
    c = synthetic()

    def val(**kw):
        s = measure.Schedule(**{**dict(train_size=50_000, val_size=10_000, epochs=20), **kw})
        return measure.estimate_training_time(c, s, attack_steps=1, global_batch=512).val_s

    assert val(eval_every=1) > val(eval_every=5) > val(eval_every=20) > val(val_size=0)
    assert val(eval_steps=20) > val(eval_steps=10)
    assert val(val_size=0, check_size=0) == 0.0
    every, fifth = val(val_size=0), val(val_size=0, check_every=5)  # the check alone
    assert fifth == pytest.approx(every / 5)


def test_estimate_rejects_a_batch_that_does_not_divide():
    with pytest.raises(ConfigError, match="does not divide"):
        measure.estimate_training_time(synthetic(), CIFAR, attack_steps=1, global_batch=100, gpus=8)
    est = measure.sweep_gpus(synthetic(), CIFAR, methods=[1], global_batch=96, gpus=[1, 2, 5])
    assert [e.gpus for e in est] == [1, 2]  # 5 left out


# -- measuring (structure only: no speed is asserted) ---------------------------------------------
def test_measure_curves_structure_and_model_left_untouched():
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", 10, 1, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    curves = measure.measure_curves(
        model,
        image_shape=(1, 8, 8),
        num_classes=10,
        batch_sizes=[4, 2],
        threat=L2(1.0),
        steps=(2, 1),
        repeats=2,
        warmup=1,
    )
    assert curves.ops() == [measure.FORWARD, measure.TRAIN_STEP, "pgd1", "pgd2"]
    for op in curves.ops():
        assert curves.batch_sizes(op) == [2, 4]
    for r in curves.rows:
        assert 0 < r.min_s <= r.median_s and r.repeats == 2
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "CPU" in curves.device


def test_time_call_synchronises_warms_up_and_counts_calls():
    calls = []
    median, fastest = measure.time_call(
        lambda: calls.append(1), torch.device("cpu"), repeats=3, warmup=2, min_sample_s=0.0
    )
    assert len(calls) == 2 + 3 and 0 <= fastest <= median
