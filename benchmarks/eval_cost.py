"""Cost of a robustness curve (``robustness_curve``) against the naive evaluation loop.

The naive loop, for each eps and each restart, runs PGD on every sample; a sample is robust at
eps when no restart fooled it. The curve attacks only still-robust samples: not the ones a
previous restart fooled, nor the ones fooled at a smaller eps (their adversarial example is
inside the larger ball: a projection check and one forward pass suffice), and nothing at
eps = 0. Both use the same per-sample seeded random starts, so their answers can be compared:
the curve must equal the naive loop made monotone in eps (fooled at eps_i => fooled at eps_j).

Two naive baselines are timed: ``naive`` exactly as described (PGD at every eps of the grid,
eps = 0 included, as a plain loop does), and ``naive-skip0`` which skips eps = 0. Timings are
interleaved (naive, naive-skip0, curve, curve+checks, repeat) and the median per variant is
reported with the ratio to each baseline; the number of input gradients (the attack work, a
machine-independent cost) is reported too. Target (issue 3): curve <= 1/3 of naive, judged
on CPU time (process time), which other jobs on a shared machine disturb less than wall time.

    python benchmarks/eval_cost.py [--runs RUN ...] [--eps 0,0.25,0.5,1,2] [--steps 20]
        [--restarts 10] [--repeats 3] [--threads 1]

Without ``--runs`` it first trains the test suite's two digits models (small_cnn, 15 epochs,
``standard`` and ``fast`` L2 eps 1.0) into a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fastrobust.attacks.registry import run_attack
from fastrobust.attacks.restarts import seeded_starts
from fastrobust.attacks.threat import threat_model
from fastrobust.checkpoint import load_model
from fastrobust.data import load_dataset
from fastrobust.data.base import to_float
from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import robustness_curve
from fastrobust.evaluation.inputs import parse_eps_list
from fastrobust.model_info import model_info
from fastrobust.training.config import TrainConfig
from fastrobust.training.trainer import fit


def train_runs(root: Path) -> list[Path]:
    runs = []
    for method in ("standard", "fast"):
        cfg = TrainConfig(
            method=method, epochs=15, batch_size=128, out_dir=str(root), name=method,
            progress=False, eval_limit=100, eval_steps=3, eval_every=5, overfit_check_size=64,
        )  # fmt: skip
        runs.append(fit(cfg).run_dir)
    return runs


def naive_loop(model, x, y, eps_list, *, steps, restarts, seed, attack_zero):
    """Every eps, every restart, PGD on every sample (one chunk); robust mask per eps."""
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    robust = []
    for j, eps in enumerate(eps_list):
        ok = clean.clone()
        threat = threat_model("l2", eps)
        for r in range(restarts if (eps > 0 or attack_zero) else 0):
            start = seeded_starts(
                threat, x, seed=seed, chunk=0, eps_index=j, attack_index=0, restart=r
            )
            delta = run_attack("pgd", model, x, y, threat, start=start, steps=steps)
            with torch.no_grad():
                ok &= model(x + delta).argmax(1) == y
        robust.append(ok)
    return torch.stack(robust)


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def bench_one(run: Path, args: argparse.Namespace, eps_list: list[float]) -> None:
    """Time the four variants on one model, interleaved, and print the comparison."""
    model = load_model(run)
    info = model_info(model)
    data = load_dataset(info.dataset)
    n = len(data.test_y) if args.limit is None else min(args.limit, len(data.test_y))
    x, y = to_float(data.test_x[:n]), data.test_y[:n]
    loop = dict(steps=args.steps, restarts=args.restarts, seed=args.seed)
    variants = {
        "naive": lambda: naive_loop(model, x, y, eps_list, attack_zero=True, **loop),
        "naive-skip0": lambda: naive_loop(model, x, y, eps_list, attack_zero=False, **loop),
        "curve": lambda: robustness_curve(
            model, (x, y), "l2", eps_list, CurveSettings(checks=False, batch_size=n, **loop)
        ),
        "curve+checks": lambda: robustness_curve(
            model, (x, y), "l2", eps_list, CurveSettings(checks=True, batch_size=n, **loop)
        ),
    }
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    results = {}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            results[name], w, c = timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
    naive_mask = results["naive-skip0"]
    monotone = naive_mask.int().cummin(0).values.bool()
    curve = results["curve"]
    agree = torch.equal(curve.robust_mask, monotone)
    grads_naive = args.steps * args.restarts * n * len(eps_list)
    grads_skip0 = args.steps * args.restarts * n * sum(e > 0 for e in eps_list)
    print(
        f"\n{run} ({info.method} {info.norm} eps {info.eps}), {n} {info.dataset} "
        f"test points, eps {args.eps}, PGD-{args.steps} x {args.restarts} restarts, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, "
        f"median of {args.repeats}"
    )
    print("accuracy (curve):       " + " ".join(f"{a:.3f}" for a in curve.accuracy))
    each = " ".join(f"{float(m.float().mean()):.3f}" for m in naive_mask)
    print(f"accuracy (naive, each): {each}")
    print(f"curve equals the naive loop made monotone in eps: {agree}")
    print(
        f"input gradients: naive {grads_naive}, naive-skip0 {grads_skip0}, curve "
        f"{curve.attack_gradients} (ratios {curve.attack_gradients / grads_naive:.3f} / "
        f"{curve.attack_gradients / grads_skip0:.3f})"
    )
    med_w = {k: statistics.median(v) for k, v in wall.items()}
    med_c = {k: statistics.median(v) for k, v in cpu.items()}
    print(
        f"{'variant':<14}{'wall s':>9}{'cpu s':>9}{'wall/naive':>12}{'cpu/naive':>11}{'cpu/skip0':>11}"
    )
    for name in variants:
        print(
            f"{name:<14}{med_w[name]:>9.2f}{med_c[name]:>9.2f}{med_w[name] / med_w['naive']:>12.3f}"
            f"{med_c[name] / med_c['naive']:>11.3f}{med_c[name] / med_c['naive-skip0']:>11.3f}"
        )
    verdict = "ok" if med_c["curve"] <= med_c["naive"] / 3 else "ABOVE TARGET"
    print(f"target curve <= 1/3 of naive (CPU time): {verdict}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", help="run folders or checkpoints (default: train two)")
    p.add_argument("--eps", default="0,0.25,0.5,1,2")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--restarts", type=int, default=10)
    p.add_argument("--limit", type=int, default=None, help="first N test points (default: all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    eps_list = parse_eps_list(args.eps)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(r) for r in args.runs] if args.runs else train_runs(Path(tmp))
        for run in runs:
            bench_one(run, args, eps_list)


if __name__ == "__main__":
    main()
