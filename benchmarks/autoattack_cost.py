"""Cost of fastrobust's AutoAttack against the reference implementation (``pyautoattack`` 0.2.0).

Two comparisons, measured in one run, interleaved (reference, fastrobust, reference grid,
fastrobust grid, repeat), on the same model and the same test points:

* ``single``: AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square with their
  budgets) at one eps: ``robustness_curve(..., [eps], CurveSettings(attacks="autoattack"))`` against
  ``AutoAttack(version="standard").run_standard_evaluation``. Goal: <= 1.0x the reference's
  time with equal or lower robust accuracy.
* ``grid``: the standard version over a 5-eps grid, fastrobust's cascade (a point fooled at a
  smaller eps is not attacked again, FAB-T runs once and settles every eps) against the
  reference run separately at each eps. Goal: <= 0.4x.

Times are CPU (process) time, which other jobs on a shared machine disturb less than wall
time; the medians over ``--repeats`` are reported with the robust accuracies.

    python benchmarks/autoattack_cost.py [--run RUN] [--norm l2] [--eps 1]
        [--grid 0.25,0.5,1,1.5,2] [--n 100] [--repeats 1] [--threads 1]

Without ``--run`` it first trains the test suite's fast digits model (small_cnn, 15 epochs,
L2 eps 1.0) into a temporary folder.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fastrobust.checkpoint import load_model
from fastrobust.data import load_dataset
from fastrobust.data.base import to_float
from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import robustness_curve
from fastrobust.evaluation.inputs import parse_eps_list
from fastrobust.training.config import TrainConfig
from fastrobust.training.trainer import fit

REFERENCE_NORMS = {"l2": "L2", "linf": "Linf"}


def train_fast_run(root: Path) -> Path:
    cfg = TrainConfig(
        method="fast", epochs=15, batch_size=128, out_dir=str(root), name="fast",
        progress=False, eval_limit=100, eval_steps=3, eval_every=5, overfit_check_size=64,
    )  # fmt: skip
    return fit(cfg).run_dir


def reference_robust(model, x, y, norm: str, eps: float) -> float:
    from pyautoattack import AutoAttack

    attack = AutoAttack(model, norm=REFERENCE_NORMS[norm], eps=eps, version="standard", seed=0)
    x_adv, _ = attack.run_standard_evaluation(x, y, batch_size=250)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def ours(model, x, y, norm: str, eps_list: list[float]) -> list[float]:
    curve = robustness_curve(
        model, (x, y), norm, eps_list, CurveSettings(attacks="autoattack", checks=False)
    )
    return curve.accuracy


def timed(fn, *args):
    started = time.process_time()
    out = fn(*args)
    return out, time.process_time() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", help="run folder or checkpoint (default: train the fast digits model)")
    p.add_argument("--norm", default="l2", choices=list(REFERENCE_NORMS))
    p.add_argument("--eps", type=float, default=1.0, help="the single eps")
    p.add_argument("--grid", default="0.25,0.5,1,1.5,2", help="the 5-eps grid")
    p.add_argument("--n", type=int, default=100, help="test points")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    grid = parse_eps_list(args.grid)

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else train_fast_run(Path(tmp))
        model = load_model(run).eval()
    digits = load_dataset("digits")
    x, y = to_float(digits.test_x[: args.n]), digits.test_y[: args.n]

    times: dict[str, list[float]] = {k: [] for k in ("ref", "ours", "ref-grid", "ours-grid")}
    acc: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        acc["ref"], t = timed(lambda: [reference_robust(model, x, y, args.norm, args.eps)])
        times["ref"].append(t)
        acc["ours"], t = timed(ours, model, x, y, args.norm, [args.eps])
        times["ours"].append(t)
        acc["ref-grid"], t = timed(
            lambda: [reference_robust(model, x, y, args.norm, eps) for eps in grid]
        )
        times["ref-grid"].append(t)
        acc["ours-grid"], t = timed(ours, model, x, y, args.norm, grid)
        times["ours-grid"].append(t)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"model {run}, {args.n} digits test points, {args.norm}, {args.threads} thread(s), "
          f"CPU time, median of {args.repeats}")  # fmt: skip
    fmt = ", ".join
    print(f"single eps {args.eps:g}: reference {med['ref']:.1f} s (robust {acc['ref'][0]:.3f}), "
          f"fastrobust {med['ours']:.1f} s (robust {acc['ours'][0]:.3f}): "
          f"{med['ours'] / med['ref']:.2f}x (goal <= 1.0x)")  # fmt: skip
    print(f"grid {fmt(f'{e:g}' for e in grid)}:")
    print(f"  reference, separately per eps: {med['ref-grid']:.1f} s, robust "
          f"{fmt(f'{a:.3f}' for a in acc['ref-grid'])}")  # fmt: skip
    print(f"  fastrobust cascade: {med['ours-grid']:.1f} s, robust "
          f"{fmt(f'{a:.3f}' for a in acc['ours-grid'])}")  # fmt: skip
    print(f"  ratio {med['ours-grid'] / med['ref-grid']:.2f}x (goal <= 0.4x)")


if __name__ == "__main__":
    main()
