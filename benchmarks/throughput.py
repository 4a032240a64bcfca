"""Training throughput of the engine under DDP: images/s per process for 1 and N processes.

For standard, fast (1-step) and 7-step PGD training, runs the real engine (``fit``: the
DistributedSampler loader, the adversary on the unwrapped module, the DDP forward/backward)
on an in-memory CIFAR-shaped dataset of random images, in 1 and in N processes started the
way torchrun starts them (gloo on CPU, NCCL on GPUs), and reports images per second per
process and in total from the engine's own per-epoch ``train_time_s`` (median over the
epochs after the first; validation is not part of it). Goodwin et al. (2020) trained 150
fast epochs of CIFAR-10 in 2.9 h on 2 V100s: about 720 images/s.

    python benchmarks/throughput.py [--procs 1,2] [--methods standard,fast,pgd7]
        [--model small_cnn] [--batch 128] [--train-size 1024] [--epochs 3] [--threads 1]
        [--device cpu|cuda] [--amp none|bf16] [--channels-last] [--compile]

The paper's model on GPUs: ``--device cuda --model resnet50 --amp bf16 --channels-last
--batch 256 --train-size 20480 --procs 1,2``; at 128 images per GPU with ``torch.compile``:
``--device cuda --model resnet50 --amp bf16 --channels-last --compile --batch 128
--train-size 12800 --procs 1``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from fastrobust.data import ImageDataset
from fastrobust.distributed import launch_local
from fastrobust.training.config import TrainConfig
from fastrobust.training.trainer import fit

METHODS = {"standard": ("standard", None), "fast": ("fast", None), "pgd7": ("pgd", 7)}


def synthetic_cifar(n: int, seed: int = 0) -> ImageDataset:
    """Random uint8 CIFAR-shaped images (the cost does not depend on their content)."""
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(
        name="synthetic-cifar",
        train_x=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
        train_y=torch.randint(0, 10, (n,), generator=g),
        test_x=torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g),
        test_y=torch.randint(0, 10, (64,), generator=g),
        classes=[str(i) for i in range(10)],
        mean=[0.4914, 0.4822, 0.4465],
        std=[0.2471, 0.2435, 0.2616],
        crop_padding=4,
        flip=True,
    )


def train(cfg_dict: dict, train_size: int) -> None:
    """One process of one measurement (module level: started by launch_local)."""
    fit(TrainConfig.from_dict(cfg_dict), dataset=synthetic_cifar(train_size))


def measure(args: argparse.Namespace, method: str, procs: int, root: Path) -> dict:
    name, steps = METHODS[method]
    cfg = TrainConfig(
        model=args.model,
        method=name,
        steps=steps,
        eps=0.5,
        epochs=args.epochs,
        batch_size=args.batch,
        schedule="constant",
        lr=0.01,
        eval_every=args.epochs,
        eval_limit=16,
        eval_steps=1,
        overfit_check_size=0,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile,
        out_dir=str(root),
        name=f"{method}-{procs}",
        progress=False,
    )
    data = cfg.to_dict()
    data.pop("resolved")
    launch_local(train, procs, data, args.train_size, threads=args.threads)  # 1 too: alike
    rows = [
        json.loads(line) for line in (root / cfg.name / "metrics.jsonl").read_text().splitlines()
    ]
    seconds = statistics.median(r["train_time_s"] for r in rows[1:])
    total = args.train_size / seconds
    return {
        "method": method,
        "procs": procs,
        "epoch_s": seconds,
        "total": total,
        "per_proc": total / procs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", default="1,2", help="process counts (default: 1,2)")
    p.add_argument("--methods", default="standard,fast,pgd7")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--batch", type=int, default=128, help="global batch (default: 128)")
    p.add_argument("--train-size", type=int, default=1024, help="images per epoch")
    p.add_argument("--epochs", type=int, default=3, help="epochs (the first is warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = p.parse_args()
    procs = [int(v) for v in args.procs.split(",")]
    if args.device.startswith("cuda"):  # one process per GPU: NCCL refuses two on one GPU
        gpus = torch.cuda.device_count()
        if any(n > gpus for n in procs):
            print(f"{gpus} GPU(s) visible: skipping --procs {[n for n in procs if n > gpus]}")
        procs = [n for n in procs if n <= gpus]
        if not procs:
            p.error(f"no --procs value fits the {gpus} visible GPU(s)")
    methods = args.methods.split(",")
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch is warm-up)")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            for n in procs:
                r = measure(args, method, n, Path(tmp))
                results.append(r)
                print(
                    f"{method:8s} {n} proc: {r['per_proc']:8.1f} img/s per process, "
                    f"{r['total']:8.1f} img/s in total ({r['epoch_s']:.2f} s/epoch)",
                    flush=True,
                )
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"\n{args.model}, CIFAR-shaped 3x32x32, global batch {args.batch}, "
        f"{args.train_size} images/epoch, {args.threads} thread(s)/process, {device}, "
        f"amp={args.amp}, channels_last={args.channels_last}, compile={args.compile}"
    )
    print("| method | processes | images/s per process | images/s total | vs standard |")
    print("|---|---|---|---|---|")
    base = {r["procs"]: r["total"] for r in results if r["method"] == "standard"}
    for r in results:
        slow = f"{base[r['procs']] / r['total']:.2f}x" if r["procs"] in base else "-"
        print(f"| {r['method']} | {r['procs']} | {r['per_proc']:.1f} | {r['total']:.1f} | {slow} |")


if __name__ == "__main__":
    main()
