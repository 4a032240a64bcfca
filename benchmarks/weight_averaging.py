"""Weight averaging vs the raw weights on digits: the same runs, both weight sets evaluated.

Trains ``fast`` and ``pgd`` with the digits bench protocol's training settings
(configs/bench_digits.yaml: small CNN, L2 eps 1.0, 20 epochs, --weight-average 0.98,
--label-smoothing 0.1) for three seeds, then evaluates each run's final weights twice
(``--weights ema`` and ``--weights raw``: the raw weights are exactly those of a run without
averaging, since the average never feeds back into training) with AutoAttack (standard) at
eps 1.0 on a class-stratified sample of test digits. Prints a markdown table and writes
``weight_averaging.json`` in the output folder.

    python benchmarks/weight_averaging.py [--out-dir /tmp/wa] [--limit 200] [--epochs 20]
        [--schedule onecycle|constant|step] [--lr 0.1] [--seeds 0,1,2] [--pgd]

``--pgd`` also attacks each weight set with PGD-20 (2 restarts, step eps/8) on all test
digits, to compare what PGD and AutoAttack say about the average (docs/bench.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fastrobust import fit, load_model, pgd, threat_model
from fastrobust.data import load_dataset
from fastrobust.data.base import ImageDataset, to_float
from fastrobust.evaluation.settings import EvaluationSettings
from fastrobust.evaluation.workflow import evaluate_model
from fastrobust.training.config import TrainConfig

METHODS = ("fast", "pgd")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default="/tmp/weight-averaging")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--tau", type=float, default=0.98)
    p.add_argument("--schedule", default="onecycle", choices=["onecycle", "constant", "step"])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated")
    p.add_argument("--pgd", action="store_true", help="also PGD-20 x 2 on all test digits")
    args = p.parse_args()
    seeds = [int(v) for v in args.seeds.split(",")]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("digits")
    settings = EvaluationSettings(
        attacks=["autoattack"], eps=[0.0, 1.0], limit=args.limit, progress=False, norm="l2"
    )
    results: list[dict[str, object]] = []
    for method in METHODS:
        for seed in seeds:
            name = f"{method}-seed{seed}"
            t0 = time.perf_counter()
            cfg = TrainConfig(
                method=method, seed=seed, epochs=args.epochs, weight_average=args.tau,
                schedule=args.schedule, lr=args.lr,
                label_smoothing=0.1, eval_limit=200, out_dir=str(out), name=name,
                progress=False,
            )  # fmt: skip
            run = out / name
            if not (run / "summary.json").is_file():
                fit(cfg)
            row: dict[str, object] = {"method": method, "seed": seed}
            for weights in ("ema", "raw"):
                model = load_model(run / "last.pt", weights=weights)  # type: ignore[arg-type]
                curve = evaluate_model(model, data, settings, label=f"{name}-{weights}")
                row[f"{weights}_clean"], row[f"{weights}_aa"] = curve.accuracy
                if args.pgd:
                    row[f"{weights}_pgd20"] = pgd_accuracy(model, data)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            results.append(row)
            print(json.dumps(row), flush=True)
    (out / "weight_averaging.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| method | weights | clean % mean (min-max) | AutoAttack % mean (min-max) |")
    print("|---|---|---|---|")
    for method in METHODS:
        for weights in ("ema", "raw"):
            cells = []
            for key in ("clean", "aa"):
                v = [100 * float(r[f"{weights}_{key}"]) for r in results if r["method"] == method]  # type: ignore[arg-type]
                cells.append(f"{statistics.fmean(v):.1f} ({min(v):.1f}-{max(v):.1f})")
            print(f"| {method} | {weights} | {cells[0]} | {cells[1]} |")


def pgd_accuracy(model: torch.nn.Module, data: ImageDataset) -> float:
    """Accuracy under PGD-20 (2 restarts, step eps/8) at L2 eps 1 on every test digit."""
    x, y = to_float(data.test_x), data.test_y
    torch.manual_seed(0)
    adv = pgd(model, x, y, threat_model("l2", 1.0), steps=20, step_size=2.5 / 20, restarts=2)
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


if __name__ == "__main__":
    main()
