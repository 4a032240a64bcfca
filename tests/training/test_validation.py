"""Validation and the overfitting check attack in chunks of the per-rank training batch."""

import pytest
import torch
from torch import nn

from conftest import tiny_config
from fastrobust.attacks.threat import L2
from fastrobust.training.trainer import fit
from fastrobust.training.validation import fixed_batch_pgd_accuracy

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


class BatchRecorder(nn.Module):
    """A small classifier that records the batch size of every eval-mode (attack) forward."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.eval_batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.eval_batches.append(x.shape[0])
        return self.net(x)


def test_fit_never_attacks_more_than_the_training_batch_at_once(tmp_path):
    net = BatchRecorder()
    cfg = tiny_config(tmp_path, epochs=1, batch_size=32, eval_limit=100, overfit_check_size=70)
    result = fit(cfg, net=net)
    assert result.val_adv_acc is not None
    assert net.eval_batches and max(net.eval_batches) == 32  # was max(global batch, 256)


def test_the_check_is_the_same_accuracy_whatever_the_chunk(digits):
    torch.manual_seed(0)
    model = BatchRecorder().eval()
    x, y = digits.train_x[:50].float() / 255, digits.train_y[:50]
    whole = fixed_batch_pgd_accuracy(model, x, y, L2(0.0001), steps=1)
    chunked = fixed_batch_pgd_accuracy(model, x, y, L2(0.0001), steps=1, batch_size=16)
    assert whole == chunked  # a tiny eps: the random starts do not matter
    assert max(model.eval_batches[-8:]) == 16 and not model.training


def test_the_last_epoch_is_also_measured_on_the_whole_test_set(tmp_path):
    import json

    cfg = tiny_config(tmp_path, epochs=2, eval_limit=50, overfit_check_size=0, name="full")
    result = fit(cfg)
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "test_adv_acc" not in rows[0]  # subset-only validation before the last epoch
    last = rows[-1]
    assert {"val_clean_acc", "test_clean_acc", "test_adv_acc"} <= set(last)
    assert last["test_clean_acc"] * 360 == pytest.approx(round(last["test_clean_acc"] * 360))
    assert last["val_clean_acc"] * 50 == pytest.approx(round(last["val_clean_acc"] * 50))
