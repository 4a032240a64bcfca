"""Share of epoch time spent outside training: validation, the overfitting check, checkpoints.

Runs the real trainer (``fastrobust.fit``) and reads its own records: per epoch ``train_time_s``
(the training loop), ``val_time_s``, ``check_time_s``, ``test_time_s`` (when they ran) and
``elapsed_s`` (everything); ``summary.json``'s ``best_test_s`` (best.pt on the whole test set
after the last epoch) is counted too. "Outside training" is ``1 - sum(train_time_s) / total``.
Two jobs:

* ``digits``: the default digits job (small CNN, fast L2, every setting at its default, so
  ``eval_every`` and ``overfit_check_every`` are ``auto``), ``--epochs`` epochs (default: the
  config's 30);
* ``cifar``: a CIFAR-shaped in-memory dataset (random 3x32x32 images, 10 classes), small CNN,
  fast L2, ``--cifar-train`` training images for ``--cifar-epochs`` epochs, validating and
  checking after every epoch on a 1000-image test split (the default ``eval_limit``), so the
  cost of one validation, one check and the rest (checkpoints, logging) per epoch is measured.
  The share of a 50k-image epoch is computed from them with the intervals the ``auto`` rule
  gives a 50k/10k-image dataset (and, for comparison, validating every epoch); the whole
  10k-image test set at the end (the final weights and best.pt) is 10 validations' time, once
  per run, shown amortised over ``--cifar-run-epochs`` epochs.

    python benchmarks/epoch_overhead.py [--epochs 30] [--cifar-train 2000] [--cifar-epochs 2]
        [--jobs digits,cifar] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any

import torch
import yaml

from fastrobust import fit
from fastrobust.data.base import ImageDataset
from fastrobust.training.config import TrainConfig
from fastrobust.training.validation import between_epoch_intervals

CIFAR_EPOCH, CIFAR_TEST = 50_000, 10_000


def cifar_shaped(n_train: int, n_test: int) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    return ImageDataset(
        name="cifar-shaped",
        train_x=torch.randint(0, 256, (n_train, 3, 32, 32), generator=g, dtype=torch.uint8),
        train_y=torch.randint(0, 10, (n_train,), generator=g),
        test_x=torch.randint(0, 256, (n_test, 3, 32, 32), generator=g, dtype=torch.uint8),
        test_y=torch.randint(0, 10, (n_test,), generator=g),
        classes=[str(i) for i in range(10)],
        mean=[0.5, 0.5, 0.5],
        std=[0.29, 0.29, 0.29],
        crop_padding=4,
        flip=True,
    )


def run(cfg: TrainConfig, dataset: ImageDataset | None) -> dict[str, Any]:
    """Seconds of one run by part, from its metrics.jsonl and summary.json."""
    result = fit(cfg, dataset=dataset)
    rows = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    parts = {
        k: sum(r.get(f"{k}_time_s", 0.0) for r in rows) for k in ("train", "val", "check", "test")
    }
    best = summary.get("best_test_s") or 0.0
    total = rows[-1]["elapsed_s"] + best
    recorded = yaml.safe_load((result.run_dir / "config.yaml").read_text())["resolved"]
    resolved = {k: recorded[k] for k in ("eval_every", "overfit_check_every")}
    return {
        **parts,
        "best_test": best,
        "total": total,
        "epochs": len(rows),
        "validations": sum("val_time_s" in r for r in rows),
        "checks": sum("check_time_s" in r for r in rows),
        "resolved": resolved,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, help="digits epochs (default: the config's)")
    p.add_argument("--cifar-train", type=int, default=2000)
    p.add_argument("--cifar-epochs", type=int, default=2)
    p.add_argument("--cifar-run-epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", default="digits,cifar", help="which jobs (default: digits,cifar)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        common: dict[str, Any] = dict(out_dir=tmp, progress=False, device="cpu", seed=0)
        jobs = args.jobs.split(",")
        if "digits" in jobs:
            epochs = {} if args.epochs is None else {"epochs": args.epochs}
            d = run(TrainConfig(name="digits", **epochs, **common), None)
            outside = d["total"] - d["train"]
            print(
                f"digits (defaults: validation every {d['resolved']['eval_every']}, check every "
                f"{d['resolved']['overfit_check_every']} epochs): {d['epochs']} epochs, "
                f"{d['validations']} validations ({d['val']:.2f} s), {d['checks']} checks "
                f"({d['check']:.2f} s), best.pt on the test set {d['best_test']:.2f} s, rest "
                f"{outside - d['val'] - d['check'] - d['best_test']:.2f} s; training "
                f"{d['train']:.1f} s of {d['total']:.1f} s: "
                f"{100 * outside / d['total']:.1f}% outside training"
            )
        if "cifar" not in jobs:
            return
        data = cifar_shaped(args.cifar_train, 1000)
        cfg = TrainConfig(
            epochs=args.cifar_epochs,
            name="cifar",
            batch_size=128,
            schedule="constant",
            eval_every=1,
            overfit_check_every=1,
            **common,
        )
        c = run(cfg, data)
        n = c["epochs"]
        per_image = c["train"] / (n * args.cifar_train)
        val, check = c["val"] / c["validations"], c["check"] / max(c["checks"], 1)
        rest = (c["total"] - c["train"] - c["val"] - c["check"] - c["test"]) / n
        auto = between_epoch_intervals(TrainConfig(), n_train=CIFAR_EPOCH, n_test=CIFAR_TEST)
        epoch_train = per_image * CIFAR_EPOCH
        print(
            f"cifar-shaped: {per_image * 1e3:.2f} ms per training image ({epoch_train:.0f} s per "
            f"{CIFAR_EPOCH}-image epoch), one validation (1000 images) {val:.1f} s, one check "
            f"(64) {check:.2f} s, the rest {rest:.2f} s per epoch (mean of {n})"
        )
        for label, k, m in (
            (f"auto (validation every {auto.eval_every}, check every {auto.overfit_check_every})",
             auto.eval_every, auto.overfit_check_every),
            ("validation and check every epoch", 1, 1),
        ):  # fmt: skip
            outside = val / k + check / m + rest
            print(
                f"  a {CIFAR_EPOCH}-image epoch, {label}: {outside:.1f} s outside training, "
                f"{100 * outside / (outside + epoch_train):.1f}%"
            )
        final = 2 * val * CIFAR_TEST / 1000  # the final weights and best.pt on 10k images
        runs = args.cifar_run_epochs
        outside = val / auto.eval_every + check / auto.overfit_check_every + rest
        per_run = runs * (epoch_train + outside) + final
        print(
            f"  a {runs}-epoch run with auto intervals, plus the final and the best weights on "
            f"the whole {CIFAR_TEST}-image test set ({final:.0f} s once): "
            f"{100 * (runs * outside + final) / per_run:.1f}% outside training"
        )


if __name__ == "__main__":
    main()
