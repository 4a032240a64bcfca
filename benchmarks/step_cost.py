"""Cost of one training step: standard vs fast (1-step) vs 7-step PGD, measured in one run.

Pass-counting floors (DESIGN.md section 4): a standard step is ~3 forward-equivalents, an
attack step adds ~2 (forward + input-only backward), so fast/standard >= ~1.67 and
pgd7/standard >= ~5.67. Goodwin et al. (2020) measured ~2.4 and ~7.6 on V100s.

Steps are timed interleaved (standard, fast, pgd7, standard, ...) after warm-up and the
median per method is reported, so machine noise hits all three alike.

    python benchmarks/step_cost.py [--model preact_resnet18] [--batch 64] [--repeats 7]
        [--image-size 32] [--classes 10]   (224-px Restricted ImageNet: --model resnet50_imagenet
        --image-size 224 --classes 9)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fastrobust.models import ModelSpec, build_model
from fastrobust.training.config import AttackConfig
from fastrobust.training.methods import build_method
from fastrobust.training.step import training_step

FLOORS = {"standard": 1.0, "fast": 5 / 3, "pgd7": 17 / 3}
TARGETS = {"fast": 1.7, "pgd7": 6.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="preact_resnet18")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--image-size", type=int, default=32, help="square RGB images (default: 32)")
    p.add_argument("--classes", type=int, default=10)
    args = p.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    size = args.image_size
    spec = ModelSpec(args.model, args.classes, 3, size, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    model = build_model(spec).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(args.batch, 3, size, size, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    methods = {  # L2 eps 0.5: fast alpha 1.5 eps, pgd7 alpha 2.5 eps / 7
        "standard": build_method(AttackConfig(method="standard", eps=0.5)),
        "fast": build_method(AttackConfig(method="fast", eps=0.5)),
        "pgd7": build_method(AttackConfig(method="pgd", eps=0.5, steps=7)),
    }

    def one(name: str) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _ = training_step(model, model, methods[name], opt, x, y)
        float(loss)  # wait for the step to finish
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for name in methods:  # warm-up
        one(name)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name in methods:
            times[name].append(one(name))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(
        f"{args.model}, batch {args.batch}, {size}x{size}x3, device {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats}"
    )
    print(f"{'method':<10}{'s/step':>10}{'img/s':>10}{'ratio':>8}{'floor':>8}{'target':>8}")
    for name, t in med.items():
        ratio = t / med["standard"]
        target = TARGETS.get(name)
        verdict = "" if target is None else ("  ok" if ratio <= target else "  ABOVE TARGET")
        print(
            f"{name:<10}{t:>10.4f}{args.batch / t:>10.1f}{ratio:>8.2f}{FLOORS[name]:>8.2f}"
            f"{(f'{target:.2f}' if target else '-'):>8}{verdict}"
        )


if __name__ == "__main__":
    main()
