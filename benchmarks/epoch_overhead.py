"""Share of epoch time spent outside training: validation, the overfitting check, checkpoints.

Runs the real trainer (``fastrobust.fit``) and reads its own per-epoch records: ``train_time_s``
(the training loop) and ``elapsed_s`` (everything), so the share outside training is
``1 - sum(train_time_s) / elapsed``. Two jobs:

* ``digits``: the default digits job (small CNN, fast L2) for ``--epochs`` epochs;
* ``cifar``: a CIFAR-shaped in-memory dataset (random 3x32x32 images, 10 classes, a 10k test
  split), small CNN, fast L2, trained on ``--cifar-train`` images per epoch. The time per training
  image and the between-epoch time (which does not depend on the training set's size) are
  measured, and the share for a 50k-image epoch is computed from them.

Each job runs with the given settings (``--eval-every``, ``--eval-limit``, ``--check-size``;
defaults: the config's defaults).

    python benchmarks/epoch_overhead.py [--epochs 6] [--cifar-train 5000] [--eval-every N]
        [--eval-limit N] [--check-size N] [--jobs digits,cifar]
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from fastrobust import fit
from fastrobust.data.base import ImageDataset
from fastrobust.training.config import TrainConfig

CIFAR_EPOCH = 50_000


def cifar_shaped(n_train: int, n_test: int = 10_000) -> ImageDataset:
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


def run(cfg: TrainConfig, dataset: ImageDataset | None) -> tuple[float, float, int]:
    """(training seconds, total seconds, epochs) of one run, from its metrics.jsonl."""
    result = fit(cfg, dataset=dataset)
    rows = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    train = sum(r["train_time_s"] for r in rows)
    return train, rows[-1]["elapsed_s"], len(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--cifar-train", type=int, default=5000)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-limit", type=int)
    p.add_argument("--check-size", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", default="digits,cifar", help="which jobs (default: digits,cifar)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    settings = {
        k: v
        for k, v in {
            "eval_every": args.eval_every,
            "eval_limit": args.eval_limit,
            "overfit_check_size": args.check_size,
        }.items()
        if v is not None
    }
    shown = TrainConfig(**settings)
    print(
        f"validation every {shown.eval_every} epoch(s) on "
        f"{shown.eval_limit or 'all'} test images (PGD-{shown.eval_steps}), overfitting check on "
        f"{shown.overfit_check_size} training images; {args.threads} thread(s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(out_dir=tmp, progress=False, device="cpu", seed=0, **settings)
        jobs = args.jobs.split(",")
        if "digits" in jobs:
            train, total, n = run(TrainConfig(epochs=args.epochs, name="digits", **common), None)
            print(
                f"digits: {n} epochs, training {train:.1f} s of {total:.1f} s: "
                f"{100 * (1 - train / total):.1f}% outside training"
            )
        if "cifar" not in jobs:
            return
        data = cifar_shaped(args.cifar_train)
        cfg = TrainConfig(
            epochs=args.epochs, name="cifar", batch_size=128, schedule="constant", **common
        )
        train, total, n = run(cfg, data)
        per_image = train / (n * args.cifar_train)
        between = (total - train) / n
        epoch_train = per_image * CIFAR_EPOCH
        print(
            f"cifar-shaped: {per_image * 1e3:.2f} ms per training image, {between:.1f} s per epoch "
            f"outside training (mean of {n}); a {CIFAR_EPOCH}-image epoch: training "
            f"{epoch_train:.0f} s, {100 * between / (between + epoch_train):.1f}% outside training"
        )


if __name__ == "__main__":
    main()
