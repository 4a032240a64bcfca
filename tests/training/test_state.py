import pytest
import torch

from fastrobust.errors import CheckpointError
from fastrobust.training.state import BestEpoch, TrainState


def _row(epoch, adv=None, clean=None):
    row = {"epoch": epoch, "elapsed_s": 10.0 * epoch}
    if adv is not None:
        row |= {"val_adv_acc": adv, "val_clean_acc": clean if clean is not None else adv}
    return row


def test_best_epoch_is_the_first_with_the_highest_value_and_skips_unvalidated_epochs():
    rows = [_row(1, 0.2), _row(2), _row(3, 0.5), _row(4, 0.5), _row(5, 0.4)]
    best = BestEpoch.from_history("val_adv_acc", rows)
    assert (best.epoch, best.value, best.elapsed_s) == (3, 0.5, 30.0)


def test_best_epoch_online_equals_from_history():
    rows = [_row(1, 0.1, 0.9), _row(2, 0.3, 0.5), _row(3, 0.2, 0.95)]
    online = BestEpoch("val_clean_acc")
    improved = [online.update(r) for r in rows]
    assert improved == [True, False, True]
    assert online == BestEpoch.from_history("val_clean_acc", rows)
    assert online.epoch == 3


def test_train_state_round_trips_through_the_checkpoint():
    state = TrainState(
        best=BestEpoch("val_adv_acc", 2, 0.4, 12.5),
        epoch=3,
        elapsed=20.0,
        history=[_row(1, 0.1), _row(2, 0.4), _row(3, 0.3)],
        optimizer={"state": {}, "param_groups": []},
        scheduler={"last_epoch": 30},
        scaler={},
        rng_ranks=[{"cpu": torch.get_rng_state()}],
        monitor={"best_check": 0.6, "good_state": {"w": torch.ones(2)}},
    )
    again = TrainState.from_checkpoint(state.to_checkpoint(), best_metric="val_adv_acc")
    assert again.best == state.best and again.history == state.history
    assert (again.epoch, again.elapsed, again.scheduler) == (3, 20.0, {"last_epoch": 30})
    assert torch.equal(again.rng_ranks[0]["cpu"], state.rng_ranks[0]["cpu"])
    assert torch.equal(again.monitor["good_state"]["w"], torch.ones(2))


def test_no_best_yet_round_trips_as_none():
    state = TrainState(
        best=BestEpoch("val_adv_acc"),
        rng_ranks=[{"cpu": torch.get_rng_state()}],
        monitor={"best_check": -1.0, "good_state": {}},
    )
    again = TrainState.from_checkpoint(state.to_checkpoint(), best_metric="val_adv_acc")
    assert again.best == BestEpoch("val_adv_acc")


def test_weights_only_checkpoint_is_not_resumable():
    with pytest.raises(CheckpointError, match="weights only"):
        TrainState.from_checkpoint({"model": {}, "epoch": 1}, best_metric="val_adv_acc")
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        TrainState.from_checkpoint({"optimizer": {}, "epoch": 1}, best_metric="val_adv_acc")
