"""What the default digits runs reach: clean and PGD accuracy of every training method.

Trains ``fastrobust train`` with its defaults (small CNN, digits, L2 eps 1.0, 30 epochs,
onecycle) for each method, then evaluates the final weights on all 360 test digits with
20-step L2 PGD, 10 random restarts, worst case per sample, at eps 0.5 and 1.0.
Prints a markdown table (the one in README.md).

    python benchmarks/digits_defaults.py [--methods standard,fast] [--out-dir /tmp/digits-defaults]
"""

from __future__ import annotations

import argparse
import time

import torch

from fastrobust import L2, fit, load_model, pgd
from fastrobust.attacks import pgd_step_size
from fastrobust.data import load_dataset
from fastrobust.data.base import to_float
from fastrobust.training.config import TrainConfig

METHODS = ("standard", "fast", "pgd", "n-fgsm", "gradalign", "free", "curriculum")
LABELS = {
    "standard": "standard",
    "fast": "fast (1 step, default)",
    "pgd": "pgd (7 steps)",
    "n-fgsm": "n-fgsm (L2 noise 1*eps, step eps)",
    "gradalign": "gradalign (fast + lambda 0.2)",
    "free": "free (4 replays, 8 epochs)",
    "curriculum": "curriculum (linear, 1 to 7 steps)",
}
EPS = (0.5, 1.0)


def robust_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    torch.manual_seed(0)
    x_adv = pgd(model, x, y, L2(eps), steps=20, step_size=pgd_step_size(eps, 20), restarts=10)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default="/tmp/digits-defaults")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    args = p.parse_args()
    data = load_dataset("digits")
    x, y = to_float(data.test_x), data.test_y
    rows = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for method in args.methods.split(","):
        cfg = TrainConfig(
            method=method, out_dir=args.out_dir, name=f"{method}-{stamp}", progress=False
        )
        result = fit(cfg)
        model = load_model(result.run_dir / "last.pt")
        with torch.no_grad():
            clean = float((model(x).argmax(1) == y).float().mean())
        adv = [robust_accuracy(model, x, y, eps) for eps in EPS]
        rows.append((method, clean, *adv, result.time_to_last_s))
    print(
        "| training (default flags + `--method`) | clean | PGD-20x10 L2 eps 0.5 | eps 1.0 | train time |"
    )
    print("|---|---|---|---|---|")
    for method, clean, a05, a10, secs in rows:
        print(f"| {LABELS[method]} | {clean:.1%} | {a05:.1%} | {a10:.1%} | {secs:.0f} s |")


if __name__ == "__main__":
    main()
