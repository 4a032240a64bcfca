import json

import pytest
import torch

from conftest import interrupt_second_epoch, tiny_config
from fastrobust import L2, load_model, pgd
from fastrobust.checkpoint import load_checkpoint
from fastrobust.data.base import to_float
from fastrobust.errors import CheckpointError, ConfigError, TrainingDiverged
from fastrobust.model_info import model_info
from fastrobust.training.between_epochs import BetweenEpochs
from fastrobust.training.epoch import EpochTrainer
from fastrobust.training.optimisation import lr_lambda
from fastrobust.training.trainer import fit, resume
from user_models import tiny_mlp


def test_run_folder_has_config_metrics_checkpoints_and_timings(tmp_path):
    result = fit(tiny_config(tmp_path, epochs=3, eval_every=2, name="r"))
    run = tmp_path / "r"
    assert result.run_dir == run and result.epochs_done == 3
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json"} <= {
        p.name for p in run.iterdir()
    }
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert "val_adv_acc" not in rows[0] and "val_adv_acc" in rows[1] and "val_adv_acc" in rows[2]
    assert rows[0]["elapsed_s"] < rows[1]["elapsed_s"] < rows[2]["elapsed_s"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] in (2, 3)
    assert summary["time_to_best_s"] <= summary["time_to_last_s"]
    best = load_checkpoint(run / "best.pt")
    assert "optimizer" not in best and best["epoch"] == summary["best_epoch"]


def test_load_model_round_trip(tmp_path, digits):
    result = fit(tiny_config(tmp_path, epochs=1, name="r"))
    model = load_model(result.run_dir)
    assert not model.training
    assert model_info(model).norm == "l2" and model_info(model).eps == 1.0
    state = load_checkpoint(result.run_dir / "last.pt")
    x = to_float(digits.test_x[:5])
    assert model(x).shape == (5, 10)
    assert torch.equal(model.state_dict()["net.0.weight"], state["model"]["net.0.weight"])


@pytest.mark.parametrize(
    "method,extra",
    [  # free and curriculum carry state between epochs (perturbation; stage of the schedule)
        ("fast", {}),
        # noise from the run's device RNG stream (slow: minutes on the loaded 2-core machine)
        pytest.param("gaussian", {"sigma": 0.5}, marks=pytest.mark.slow),
        pytest.param("smoothadv", {"sigma": 0.5, "noise_samples": 2}, marks=pytest.mark.slow),
        ("free", {"epochs": 6, "replays": 2}),  # 3 epochs of 2 replays
        ("curriculum", {"curriculum": "adaptive", "curriculum_patience": 1}),
    ],
)
def test_resumed_training_equals_uninterrupted(tmp_path, monkeypatch, method, extra):
    cfg = dict(epochs=3, method=method, eval_every=1) | extra
    full = fit(tiny_config(tmp_path, name="full", **cfg))

    original = interrupt_second_epoch(monkeypatch)
    part = fit(tiny_config(tmp_path, name="part", **cfg))
    assert part.interrupted and part.epochs_done == 1
    monkeypatch.setattr(EpochTrainer, "train_epoch", original)
    resumed = resume(part.run_dir)
    assert resumed.epochs_done == 3
    a = load_checkpoint(full.run_dir / "last.pt")
    b = load_checkpoint(resumed.run_dir / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows_a = (full.run_dir / "metrics.jsonl").read_text().splitlines()
    rows_b = (part.run_dir / "metrics.jsonl").read_text().splitlines()
    strip = lambda r: {k: v for k, v in json.loads(r).items() if not k.endswith("_s")}  # noqa: E731
    assert [strip(r) for r in rows_a] == [strip(r) for r in rows_b]


def test_resume_can_extend_epochs(tmp_path):
    first = fit(tiny_config(tmp_path, name="r", epochs=1, schedule="constant"))
    more = resume(first.run_dir, epochs=2)
    assert more.epochs_done == 2
    assert load_checkpoint(first.run_dir / "last.pt")["epoch"] == 2


def test_free_resume_epochs_is_the_epoch_budget_and_equals_an_uninterrupted_run(tmp_path):
    # --epochs is the budget of passes for free too: 3 passes of 2 replays are 2 epochs, 7 are 4
    cfg = dict(method="free", replays=2, schedule="step", lr_step_epochs=3, eval_every=1)
    full = fit(tiny_config(tmp_path, name="full", epochs=7, **cfg))
    part = fit(tiny_config(tmp_path, name="part", epochs=3, **cfg))
    assert (full.epochs_done, part.epochs_done) == (4, 2)
    assert resume(part.run_dir).nothing_to_do
    assert resume(part.run_dir, epochs=4).nothing_to_do  # still 2 epochs: nothing is written
    with pytest.raises(
        ConfigError, match=r"optimisation.epochs 2 \(1 epochs of replayed batches\) is below"
    ):
        resume(part.run_dir, epochs=2)
    more = resume(part.run_dir, epochs=7)
    assert more.epochs_done == 4 and more.extensions == [
        {"at_epoch": 2, "from_epochs": 3, "to_epochs": 7}
    ]
    a = load_checkpoint(full.run_dir / "last.pt")
    b = load_checkpoint(part.run_dir / "last.pt")
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 8 * 12  # 12 batches
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["method_ranks"][0]["delta"], b["method_ranks"][0]["delta"])
    rows_a = (full.run_dir / "metrics.jsonl").read_text().splitlines()
    rows_b = (part.run_dir / "metrics.jsonl").read_text().splitlines()
    # times differ, and the shorter plan's last epoch was also tested on the whole test split
    strip = lambda r: {  # noqa: E731
        k: v for k, v in json.loads(r).items() if not (k.endswith("_s") or k.startswith("test_"))
    }
    assert [strip(r) for r in rows_a] == [strip(r) for r in rows_b]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        fit(tiny_config(tmp_path, name="nan", lr=1e12, schedule="constant", epochs=3))
    state = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_early_stop_restores_last_good_weights(tmp_path, monkeypatch):
    checks = iter([0.5, 0.6, 0.05, 0.04])
    snapshots = []

    def fake_check(self):
        snapshots.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return next(checks)

    monkeypatch.setattr(BetweenEpochs, "overfit_check", fake_check)
    result = fit(tiny_config(tmp_path, name="es", epochs=4, early_stop=True))
    assert result.collapsed_at == 3 and result.epochs_done == 3
    final = load_checkpoint(tmp_path / "es" / "last.pt")["model"]
    good = snapshots[1]  # weights when the check peaked (epoch 2)
    assert all(torch.equal(final[k], good[k]) for k in good)
    rows = [json.loads(r) for r in (tmp_path / "es" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["catastrophic_overfitting"] is True


def test_collapse_is_only_warned_without_early_stop(tmp_path, monkeypatch, caplog):
    checks = iter([0.5, 0.6, 0.05])
    monkeypatch.setattr(BetweenEpochs, "overfit_check", lambda self: next(checks))
    result = fit(tiny_config(tmp_path, name="w", epochs=3, overfit_check_every=1))
    assert result.collapsed_at is None and result.epochs_done == 3
    assert "catastrophic overfitting" in caplog.text


def test_batch_larger_than_dataset_creates_no_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="larger than the training set"):
        fit(tiny_config(tmp_path, name="big", batch_size=5000))
    assert not (tmp_path / "big").exists()


def test_existing_run_folder_is_not_overwritten(tmp_path):
    fit(tiny_config(tmp_path, name="r", epochs=1))
    with pytest.raises(ConfigError, match="already exists"):
        fit(tiny_config(tmp_path, name="r", epochs=1))


def test_user_model_factory_and_module(tmp_path):
    result = fit(tiny_config(tmp_path, name="u", model="user_models:tiny_mlp", epochs=1))
    with pytest.raises(CheckpointError, match="import_factory"):
        load_model(result.run_dir)  # the factory the file names is not imported by default
    model = load_model(result.run_dir, import_factory=True)
    assert isinstance(model.net[1], torch.nn.Linear)
    result = fit(tiny_config(tmp_path, name="obj", epochs=1), net=tiny_mlp(10, 1, 8))
    assert result.epochs_done == 1
    with pytest.raises(CheckpointError, match="net="):
        load_model(result.run_dir)
    reloaded = load_model(result.run_dir, net=tiny_mlp(10, 1, 8))
    assert reloaded(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ConfigError, match="cannot import"):
        fit(tiny_config(tmp_path, name="x", model="user_models:nope"))
    with pytest.raises(ConfigError, match="not callable"):
        fit(tiny_config(tmp_path, name="y", model="user_models:NOT_A_FACTORY"))


def test_lr_schedules():
    cfg = tiny_config("/tmp", epochs=150, schedule="step", lr_step_epochs=50)
    f = lr_lambda(cfg.optimisation, 10)
    assert (
        f(0) == 1
        and f(499) == 1
        and f(500) == pytest.approx(0.1)
        and f(1499) == pytest.approx(0.01)
    )
    cyc = lr_lambda(tiny_config("/tmp", epochs=10, schedule="onecycle").optimisation, 10)
    values = [cyc(i) for i in range(100)]
    peak = values.index(max(values))
    assert max(values) == 1 and 30 <= peak <= 50 and values[-1] < 0.05


def test_robust_training_beats_standard_under_attack(trained_runs, digits):
    x = to_float(digits.test_x[:200])
    y = digits.test_y[:200]
    acc = {}
    for name, run in trained_runs.items():
        model = load_model(run)
        torch.manual_seed(0)
        x_adv = pgd(model, x, y, L2(1.0), steps=10, step_size=0.25)
        acc[name] = float((model(x_adv).argmax(1) == y).float().mean())
        acc[name + "_clean"] = float((model(x).argmax(1) == y).float().mean())
    assert acc["standard_clean"] > 0.8 and acc["fast_clean"] > 0.6
    assert acc["fast"] > acc["standard"] + 0.1, acc
