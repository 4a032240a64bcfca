"""Perceptual alignment: judges, bootstrap intervals, and the score on real digits models."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from fastrobust.checkpoint import load_model
from fastrobust.data.base import to_float
from fastrobust.study.alignment import bootstrap_interval, choose_sources, score_model
from fastrobust.study.judges import KnnJudge, ModelJudge, judge_accuracy, mlp
from fastrobust.training.trainer import fit


def test_knn_judge_votes_and_breaks_ties_to_the_nearest():
    train_x = torch.tensor([0.0, 0.1, 0.2, 0.9, 1.0]).view(5, 1, 1, 1)
    train_y = torch.tensor([0, 0, 1, 1, 1])
    judge = KnnJudge(train_x, train_y, k=3)
    q = torch.tensor([0.05, 0.95, 0.15]).view(3, 1, 1, 1)
    assert judge(q).tolist() == [0, 1, 0]
    one = KnnJudge(train_x, train_y, k=1)
    assert one(train_x).tolist() == train_y.tolist()
    tie = KnnJudge(train_x[[1, 2]], train_y[[1, 2]], k=2)  # one vote each: nearest wins
    assert tie(torch.tensor([0.12, 0.19]).view(2, 1, 1, 1)).tolist() == [0, 1]


def test_knn_is_a_good_judge_of_clean_digits(digits):
    judge = KnnJudge(to_float(digits.train_x), digits.train_y, k=5)
    assert judge_accuracy(judge, to_float(digits.test_x), digits.test_y) > 0.95


def test_bootstrap_interval():
    hits = torch.tensor([1] * 30 + [0] * 70, dtype=torch.bool)
    low, high = bootstrap_interval(hits, samples=2000, seed=1)
    assert low < 0.3 < high and 0.15 < low and high < 0.45
    wide = bootstrap_interval(hits[::10], samples=2000, seed=1)
    assert wide[1] - wide[0] > high - low  # fewer images, wider interval
    assert bootstrap_interval(torch.ones(10, dtype=torch.bool)) == (1.0, 1.0)


def test_sources_are_judged_right_and_targets_differ(digits):
    x, y = to_float(digits.test_x), digits.test_y
    judge = KnnJudge(to_float(digits.train_x), digits.train_y, k=5)
    idx, targets = choose_sources(x, y, [judge], 50, 10, seed=3)
    assert len(idx) == 50 and (targets != y[idx]).all()
    assert (judge(x[idx]) == y[idx]).all()
    again = choose_sources(x, y, [judge], 50, 10, seed=3)
    assert torch.equal(again[0], idx) and torch.equal(again[1], targets)


def test_model_judge_keeps_the_mode():
    net = mlp(num_classes=3, in_channels=1, image_size=4).train()
    judge = ModelJudge(net, "mlp", "an mlp")
    assert judge(torch.rand(5, 1, 4, 4)).shape == (5,)
    assert net.training


def _scores(digits, runs: dict, eps: float, n: int = 100):
    x, y = to_float(digits.test_x), digits.test_y
    judge = KnnJudge(to_float(digits.train_x), digits.train_y, k=5)
    idx, targets = choose_sources(x, y, [judge], n, 10, seed=0)
    scores = {}
    for label, run in runs.items():
        model = load_model(run / "last.pt")
        (score,), images = score_model(
            model, label, x[idx], targets, [judge], [eps], steps=50, bootstrap=500
        )
        assert score.n == n and score.low <= score.score <= score.high
        assert images[eps].shape == x[idx].shape
        assert ((images[eps] - x[idx]).flatten(1).norm(dim=1) <= eps + 1e-4).all()
        scores[label] = score
    return scores


def test_fast_model_is_better_aligned_than_standard(digits, trained_runs, one_thread):
    scores = _scores(digits, trained_runs, 1.5)
    assert scores["fast"].score > scores["standard"].score + 0.05, scores


@pytest.fixture(scope="module")
def pgd_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pgd")
    cfg = tiny_config(root, method="pgd", steps=3, epochs=15, name="pgd", eval_every=15)
    return fit(cfg).run_dir


@pytest.mark.slow
def test_pgd_model_is_better_aligned_than_standard(digits, trained_runs, pgd_run, one_thread):
    """The paper's Figure 5 as a number: a k-NN on pixels calls a PGD-trained model's targeted
    perturbations 'the target' more often than a standard model's (eps 1.5 on digits;
    measured 40% against 23%)."""
    scores = _scores(digits, {"standard": trained_runs["standard"], "pgd": pgd_run}, 1.5)
    assert scores["pgd"].score > scores["standard"].score + 0.05, scores
