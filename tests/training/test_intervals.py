"""How often validation and the overfitting check run (the ``auto`` rule), and the best
epoch's weights measured on the whole test set at the end of a run."""

import json

import pytest
import torch
import yaml

from conftest import tiny_config
from fastrobust import distributed
from fastrobust.checkpoint import load_model
from fastrobust.errors import ConfigError
from fastrobust.seeding import RunSeeds
from fastrobust.training.between_epochs import BetweenEpochs
from fastrobust.training.config import TrainConfig
from fastrobust.training.trainer import Trainer, fit
from fastrobust.training.validation import between_epoch_intervals, evaluate_split

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"eval_every": "often"}, "eval_every must be a whole number of epochs >= 1 or auto"),
        ({"eval_every": 0}, "eval_every must be"),
        ({"overfit_check_every": -2}, "overfit_check_every must be"),
        ({"overfit_check_every": 1.5}, "expected an integer or text"),
        ({"eval_every": True}, "expected an integer or text"),
        (
            {"method": "curriculum", "curriculum": "adaptive", "overfit_check_every": 3},
            r"method curriculum as configured \(curriculum adaptive, .*\) reads the "
            "overfitting check after every epoch",
        ),
    ],
)
def test_bad_intervals_are_one_line_errors(kw, words):
    with pytest.raises(ConfigError, match=words) as err:
        TrainConfig(**kw)
    assert "\n" not in str(err.value)


def test_auto_rule_scales_with_the_epochs_cost():
    digits = between_epoch_intervals(TrainConfig(), n_train=1437, n_test=360)
    # one validation: 360 x 11 passes against 1437 x 2 per epoch: 4% -> every 35 epochs
    assert (digits.eval_every, digits.overfit_check_every) == (35, 13)
    assert (digits.epoch_work, digits.validation_work, digits.check_work) == (2874, 3960, 704)
    cifar = between_epoch_intervals(TrainConfig(), n_train=50_000, n_test=10_000)
    assert (cifar.eval_every, cifar.overfit_check_every) == (3, 1)  # 1000 of the 10k images
    pgd7 = between_epoch_intervals(TrainConfig(method="pgd"), n_train=50_000, n_test=10_000)
    assert pgd7.eval_every == 1 and pgd7.epoch_work == 50_000 * 8
    acting = between_epoch_intervals(TrainConfig(early_stop=True), n_train=1437, n_test=360)
    assert acting.overfit_check_every == 1  # early stopping acts on every check
    given = between_epoch_intervals(
        TrainConfig(eval_every=2, overfit_check_every=5), n_train=1437, n_test=360
    )
    assert (given.eval_every, given.overfit_check_every) == (2, 5)


def test_run_follows_and_records_the_resolved_intervals(tmp_path):
    cfg = tiny_config(tmp_path, epochs=5, name="auto")  # 100 images x 4 passes, check 64 x 4
    result = fit(cfg)
    recorded = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert recorded["evaluation"]["eval_every"] == "auto"
    want = between_epoch_intervals(cfg, n_train=1437, n_test=360)
    assert recorded["resolved"]["eval_every"] == want.eval_every == 4
    assert recorded["resolved"]["overfit_check_every"] == want.overfit_check_every == 5
    rows = result.history
    assert [r["epoch"] for r in rows if "val_adv_acc" in r] == [4, 5]  # every 4 and the last
    assert [r["epoch"] for r in rows if "overfit_check_pgd_acc" in r] == [5]
    assert all(("val_time_s" in r) == ("val_adv_acc" in r) for r in rows)


def test_best_epoch_is_measured_on_the_whole_test_set(tmp_path, monkeypatch):
    real = BetweenEpochs.validate
    falling = iter([0.9, 0.5, 0.4])  # validation on the subset: epoch 1 is the best

    def validate(self, *, whole_split=False):
        if whole_split:
            return real(self, whole_split=True)
        return 0.5, next(falling)

    monkeypatch.setattr(BetweenEpochs, "validate", validate)
    cfg = tiny_config(tmp_path, epochs=3, eval_every=1, eval_limit=50, name="best")
    trainer = Trainer(cfg)
    result = trainer.fit()
    assert (result.best_epoch, result.epochs_done) == (1, 3)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    last = result.history[-1]
    assert (summary["test_clean_acc"], summary["test_adv_acc"]) == (
        last["test_clean_acc"],
        last["test_adv_acc"],
    )
    assert summary["test_images"] == 360 and summary["best_test_s"] > 0
    # best.pt evaluated here on the whole test set with the run's stream gives the same values
    model = load_model(result.run_dir / "best.pt")
    torch.manual_seed(RunSeeds(cfg.seed).best_epoch_test(1))
    from fastrobust.data import load_dataset

    data = load_dataset("digits")
    clean, adv = evaluate_split(
        model,
        data.test_x,
        data.test_y,
        cfg.threat(),
        steps=cfg.eval_steps,
        batch_size=cfg.batch_size,
        device=torch.device("cpu"),
        world=distributed.world_info_from_env(),
    )
    assert (summary["best_test_clean_acc"], summary["best_test_adv_acc"]) == (clean, adv)
    assert summary["best_test_clean_acc"] != summary["test_clean_acc"]  # other weights
    # measuring best.pt left the trainer's model with the final weights (those of last.pt)
    final = load_model(result.run_dir / "last.pt").state_dict()
    kept = trainer.model.state_dict()
    assert final.keys() == kept.keys() and all(torch.equal(final[k], kept[k]) for k in final)


def test_best_epoch_that_is_the_last_is_not_measured_twice(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1, eval_limit=50, overfit_check_size=0, name="one")
    result = fit(cfg)
    assert result.best_epoch == 1 and result.best_test_s is None
    assert (result.best_test_clean_acc, result.best_test_adv_acc) == (
        result.test_clean_acc,
        result.test_adv_acc,
    )


def test_run_recorded_before_the_check_interval_resumes_checking_every_epoch(tmp_path):
    from fastrobust.checkpoint import load_checkpoint, save_checkpoint
    from fastrobust.training.trainer import resume

    cfg = tiny_config(tmp_path, epochs=1, schedule="constant", overfit_check_size=16, name="old")
    run = fit(cfg).run_dir
    state = load_checkpoint(run / "last.pt")
    del state["config"]["overfit_check_every"]  # as written before the field existed
    del state["config"]["schema_version"]  # ... in a record of version 1
    save_checkpoint(run / "last.pt", state)
    resumed = resume(run, epochs=3)
    assert [("overfit_check_pgd_acc" in r) for r in resumed.history] == [False, True, True]
