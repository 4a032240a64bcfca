"""The paper's Table I from run folders (Goodwin et al. 2020, Table I)."""

from __future__ import annotations

import pytest

from conftest import tiny_config
from fastrobust.errors import CheckpointError, ConfigError
from fastrobust.timing.runs_table import read_run, table_one
from fastrobust.training.trainer import fit
from run_folders import fake_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_table_one_hours_and_ratios(tmp_path):
    pgd = read_run(fake_run(tmp_path, "pgd", "pgd", [3600, 7200, 10800], [0.3, 0.5, 0.4]))
    fast = read_run(fake_run(tmp_path, "fast", "fast", [900, 1800, 2700], [0.4, 0.4, 0.45]))
    assert (pgd.method, pgd.attack_steps, pgd.best_epoch, pgd.time_to_best_s) == (
        "pgd7",
        7,
        2,
        7200,
    )
    assert (fast.best_epoch, fast.best_value, fast.best_metric) == (3, 0.45, "val_adv_acc")
    assert pgd.test_adv_acc is None  # summary.json without test-set accuracies
    rows = table_one([pgd, fast], baseline=0)
    assert rows[0]["hours_to_last"] == 3.0 and rows[0]["rel_last"] == 1.0
    assert rows[1]["hours_to_last"] == 0.75 and rows[1]["hours_to_best"] == 0.75
    assert rows[1]["rel_last"] == pytest.approx(0.25)
    assert rows[1]["rel_best"] == pytest.approx(2700 / 7200)
    with pytest.raises(ConfigError):
        table_one([pgd], baseline=3)


def test_standard_runs_pick_their_best_epoch_by_clean_accuracy(tmp_path):
    run = fake_run(tmp_path, "std", "standard", [1, 2, 3], [0.2, 0.1, 0.0], clean=[0.5, 0.9, 0.8])
    r = read_run(run)
    assert (r.method, r.best_metric, r.best_epoch, r.time_to_best_s) == (
        "standard",
        "val_clean_acc",
        2,
        2,
    )


def test_read_run_of_a_real_training_run(tmp_path, digits):
    result = fit(tiny_config(tmp_path, name="real", epochs=1), dataset=digits)
    r = read_run(result.run_dir)
    assert (r.method, r.epochs_done, r.world_size, r.dataset) == ("fast", 1, 1, "digits")
    assert r.time_to_last_s == pytest.approx(result.time_to_last_s)
    assert (r.best_epoch, r.time_to_best_s) == (result.best_epoch, result.time_to_best_s)
    assert r.best_value == pytest.approx(result.best_value)
    assert r.test_adv_acc == result.test_adv_acc is not None  # from summary.json
    assert r.best_test_adv_acc == result.best_test_adv_acc is not None
    row = table_one([r])[0]
    assert (row["test_adv_acc"], row["best_test_adv_acc"]) == (r.test_adv_acc, r.best_test_adv_acc)


def test_read_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a fastrobust run folder"):
        read_run(tmp_path / "empty")


# -- CLI --------------------------------------------------------------------------------------------
