"""The one restarts helper: skips fooled samples, keeps the first fooling run, else the worst."""

import torch

from fastrobust.attacks.restarts import AttackRun, worst_case_over_restarts


def test_restarts_skip_fooled_samples_and_keep_the_worst_case():
    x = torch.zeros(4, 1, 2, 2)
    # per restart: which samples it fools and the loss it reaches (indexed by sample)
    fools = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    losses = torch.tensor([[0.5, 2.0, 0.3, 0.1], [0.4, 9.0, 0.9, 0.0], [0.2, 9.0, 0.1, 0.0]])
    seen = []

    def run_once(active, restart):
        seen.append(active.tolist())
        delta = torch.full((len(active), 1, 2, 2), float(restart + 1))
        return AttackRun(delta, fools[restart, active], losses[restart, active])

    already = torch.tensor([False, False, False, True])  # e.g. misclassified clean
    worst = worst_case_over_restarts(run_once, x, 3, fooled=already)
    assert seen == [[0, 1, 2], [0, 2], [2]]  # fooled samples are never attacked again
    assert worst.fooled.tolist() == [True, True, False, True]
    # sample 0: fooled by restart 2; 1: by restart 1; 2: its highest loss (restart 2); 3: zero
    assert worst.delta[:, 0, 0, 0].tolist() == [2.0, 1.0, 2.0, 0.0]
    assert torch.equal(worst.loss[:3], torch.tensor([0.4, 2.0, 0.9]))
    assert already.tolist() == [False, False, False, True]  # the caller's mask is not changed


def test_restarts_stop_when_every_sample_is_fooled():
    calls = []

    def run_once(active, restart):
        calls.append(restart)
        n = len(active)
        return AttackRun(torch.ones(n, 1), torch.ones(n, dtype=torch.bool), torch.zeros(n))

    worst = worst_case_over_restarts(run_once, torch.zeros(3, 1), 5)
    assert calls == [0] and worst.fooled.all()
