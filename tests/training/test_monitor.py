import torch

from fastrobust.training.monitor import OverfittingMonitor


def _monitor(**kw):
    model = torch.nn.Linear(2, 2)
    return model, OverfittingMonitor(model, **({"armed": True, "keep_good_weights": True} | kw))


def test_a_sharp_fall_from_the_best_is_a_collapse():
    _, monitor = _monitor()
    assert [monitor.update(a, epoch=i) for i, a in enumerate([0.5, 0.6, 0.55, 0.05])] == [
        False,
        False,
        False,
        True,
    ]


def test_noise_and_low_accuracy_are_not_collapses():
    _, monitor = _monitor()
    # small drops, and a large relative drop from a best that is itself below 0.2
    assert not any(monitor.update(a, epoch=i) for i, a in enumerate([0.5, 0.45, 0.4, 0.35]))
    _, low = _monitor()
    assert not any(low.update(a, epoch=i) for i, a in enumerate([0.15, 0.01]))


def test_unarmed_monitor_never_reports_a_collapse():
    _, monitor = _monitor(armed=False)
    assert not any(monitor.update(a, epoch=i) for i, a in enumerate([0.6, 0.0]))


def test_restore_puts_back_the_weights_of_the_best_check():
    model, monitor = _monitor()
    monitor.update(0.6, epoch=1)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    assert monitor.update(0.05, epoch=2)
    monitor.restore()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good.items())


def test_state_round_trip():
    _, monitor = _monitor()
    monitor.update(0.6, epoch=1)
    _, other = _monitor()
    other.load_state_dict(monitor.state_dict())
    assert other.best == 0.6 and other.update(0.05, epoch=2)
