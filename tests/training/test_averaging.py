"""Weight averaging (--weight-average) and label smoothing (--label-smoothing): the average
follows its definition, resumes bitwise, is what validation and load_model use by default,
and the raw weights stay selectable."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from conftest import interrupt_second_epoch, tiny_config
from fastrobust import load_model
from fastrobust.checkpoint import load_checkpoint
from fastrobust.data.base import to_float
from fastrobust.errors import CheckpointError, ConfigError
from fastrobust.model_info import model_info
from fastrobust.training.averaging import WeightAverage, warmup_decay
from fastrobust.training.config import TrainConfig
from fastrobust.training.epoch import EpochTrainer
from fastrobust.training.methods import TrainingMethod
from fastrobust.training.trainer import fit, resume


def test_average_follows_its_recursion_buffers_included():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    avg = WeightAverage(model, tau=0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for t in range(30):
        model.train()
        model(torch.randn(8, 3))  # moves the BatchNorm running statistics
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        avg.update(model)
        d = min(0.9, (1 + t) / (10 + t))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                expected[k] = d * expected[k] + (1 - d) * v
            else:
                expected[k] = v.clone()
    for k, v in avg.state_dict().items():
        torch.testing.assert_close(v, expected[k], msg=k)
    assert avg.state_dict()["1.num_batches_tracked"] == 30
    assert warmup_decay(0.9995, 0) == pytest.approx(0.1) and warmup_decay(0.5, 10**6) == 0.5
    assert not any(p.requires_grad for p in avg.module.parameters())


@pytest.mark.parametrize("key,value", [("weight_average", 1.0), ("label_smoothing", -0.1)])
def test_bad_values_name_the_field(key, value):
    with pytest.raises(ConfigError, match=f"optimisation.{key}") as info:
        TrainConfig(**{key: value})
    assert info.value.field == f"optimisation.{key}"


def test_label_smoothing_is_the_weight_update_loss():
    method = TrainingMethod()
    logits, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    method.label_smoothing = 0.2
    q = torch.full((5, 3), 0.2 / 3).scatter(1, y[:, None], 1 - 0.2 + 0.2 / 3)
    manual = -(q * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(method.criterion(logits, y), manual)


#: a quick run: few images, a small validation, no overfitting check
QUICK = dict(eval_limit=40, eval_steps=1, overfit_check_size=0, batch_size=64)


def _small(data):
    return dataclasses.replace(data, train_x=data.train_x[:256], train_y=data.train_y[:256])


def test_resume_with_average_equals_uninterrupted_bitwise(tmp_path, monkeypatch, digits):
    cfg = dict(epochs=2, eval_every=1, weight_average=0.9, label_smoothing=0.1) | QUICK
    data = _small(digits)
    full = fit(tiny_config(tmp_path, name="full", **cfg), dataset=data)
    original = interrupt_second_epoch(monkeypatch)
    part = fit(tiny_config(tmp_path, name="part", **cfg), dataset=data)
    assert part.interrupted and part.epochs_done == 1
    monkeypatch.setattr(EpochTrainer, "train_epoch", original)
    resume(part.run_dir, dataset=data)
    a, b = load_checkpoint(full.run_dir / "last.pt"), load_checkpoint(part.run_dir / "last.pt")
    assert a["ema_updates"] == b["ema_updates"] == 2 * 4  # 4 batches of 64 per epoch
    for key in ("model", "ema_model"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert any(not torch.equal(a["model"][k], a["ema_model"][k]) for k in a["model"])
    rows = lambda run: [  # noqa: E731
        {k: v for k, v in json.loads(r).items() if not k.endswith("_s")}
        for r in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows(full.run_dir) == rows(part.run_dir)

    # load_model takes the average by default and says so; raw stays selectable
    ema, raw = load_model(full.run_dir / "last.pt"), load_model(full.run_dir, weights="raw")
    assert model_info(ema).weights == "ema" and model_info(raw).weights == "raw"
    for k, v in ema.state_dict().items():
        assert torch.equal(v, a["ema_model"][k]), k
    best = load_checkpoint(full.run_dir / "best.pt")
    assert "ema_model" in best
    # validation measured the average: re-measuring it reproduces the logged accuracy
    x = to_float(digits.test_x)
    clean = (ema(x).argmax(1) == digits.test_y).float().mean().item()
    assert rows(full.run_dir)[-1]["test_clean_acc"] == pytest.approx(clean, abs=1e-6)


def test_asking_for_averaged_weights_of_a_run_without_them_is_refused(tmp_path, digits):
    run = fit(tiny_config(tmp_path, name="plain", epochs=1, **QUICK), dataset=_small(digits))
    run = run.run_dir
    with pytest.raises(CheckpointError, match="no averaged weights"):
        load_model(run, weights="ema")
    assert model_info(load_model(run)).weights == "raw"
