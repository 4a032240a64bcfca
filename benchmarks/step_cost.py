"""Cost of one training step of every training method, measured in one run.

Pass-counting floors (docs/architecture.md): a standard step is ~3 forward-equivalents, an
attack step adds ~2 (forward + input-only backward), so fast/standard and n-fgsm/standard >=
~1.67 and pgd7/standard >= ~5.67; a free replay is one training step whose backward also
yields the input gradient (~1.0); gradalign is a clean input gradient (~2), the noisy input
gradient kept differentiable (~2; it is also the fast step's direction), the training step
(~3) and the penalty's second-order pass (~4: a forward-like and a weight-gradient-like
convolution per layer for the differentiated input gradient, then a full backward through the
noisy forward), so gradalign/standard >= ~11/3; curriculum costs what its current number of
steps costs. Goodwin et al. (2020) measured ~2.4 and ~7.6 on V100s.

The single-step methods of issue 21 (docs/single_step.md), in the same units: fgsm-pgi is its
start's forward kept for the regulariser (1), the input-only backward (1), the training
forward (1) and a full backward through both forwards (2 + 2): 7/3, as fgsm-uap and fgsm-cuap
(a shared start instead of a per-sample one); fgsm-fuap adds a no-grad forward for the
features its head picks a perturbation from (1): 8/3; fgsm-pco is fgsm-pgi's start and input gradient
(2) plus two training forwards (the mixed and the FGSM points, 2) and a backward through all
three forwards (6): 10/3; liet costs what fgsm-pgi costs (its class-wise start, a forward and
input gradient of one grey image per class every 20 batches, is not counted, and the timed
steps are not the ones that refresh it); nuat and gat are the
attack (2), the adversarial and the clean training forwards (2) and their full backward (4),
plus a no-grad clean forward on every other batch (0.5): 8.5/3; elle is the fast step (5)
plus the linearity triplet, a forward and full backward of three batches (9): 14/3; zerograd
and n-aaer cost what fast costs (5/3; zerograd's per-sample order statistic is not counted).
``FASTAT`` is what the FastAT Benchmark (Pan & Yao 2026, CIFAR-10 ResNet-18 on a GPU)
reports per method relative to FGSM-AT; the table prints our ratio to ``fast`` beside it.

Steps are timed interleaved (standard, fast, pgd7, n-fgsm, ...) after warm-up and the median
per method is reported, so machine noise hits all methods alike. ``free`` is timed per replay
(one weight update). ``curriculum`` (linear schedule, 1 to 7 steps) moves one epoch through its
schedule per repeat, from its first epoch to its last, and its *mean* over the repeats is the
schedule's average cost per step.

On a CPU the ratios come from the process's CPU time (``--clock cpu``, the default there): on
a machine shared with other work a step's wall-clock time also counts the time it waited for a
core, which varies from step to step and hides the cost of the method; CPU time counts the
work done. The wall-clock time is shown next to it. On a GPU the clock is the wall clock
(after ``torch.cuda.synchronize``).

    python benchmarks/step_cost.py [--model preact_resnet18] [--batch 64] [--repeats 7]
        [--image-size 32] [--classes 10] [--clock auto|cpu|wall]
        (224-px Restricted ImageNet: --model resnet50_imagenet --image-size 224 --classes 9)
        [--methods standard,fast,pgd7] [--amp none|bf16] [--channels-last] [--compile]

``--amp``, ``--channels-last`` and ``--compile`` are the trainer's speed options (autocast of
the whole step, NHWC model and inputs, ``torch.compile`` of the model the step runs).
``--compile`` times three variants interleaved in one run, each method's ratio to the same
variant's standard step: ``eager``; ``compiled``, as the trainer compiles (the weight update
through ``torch.compile(model)``, the attack through
``torch.compile(InputGradientsOnly(model))``, whose backward computes input gradients only);
and ``compiled-plain``, the attack through ``torch.compile(model)`` too, as before issue 20
(its backward also computes every weight gradient and discards it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from fastrobust.attacks.contract import InputGradientsOnly
from fastrobust.models import ModelSpec, build_model
from fastrobust.training.config import AttackConfig
from fastrobust.training.methods import build_method
from fastrobust.training.step import autocast_context, training_step

FLOORS = {
    "standard": 1.0,
    "fast": 5 / 3,
    "pgd7": 17 / 3,
    "n-fgsm": 5 / 3,
    "free": 1.0,
    "gradalign": 11 / 3,
    "curriculum": (3 + 2 * 4) / 3,  # the linear 1..7 schedule averages 4 steps
    "gaussian": 1.0,  # a noisy copy: the standard step
    "smoothadv1": 5 / 3,  # m = 1: the fast step on a noisy copy
    "smoothadv1-m4": 20 / 3,  # m = 4: 4 noisy attack passes (4 x 2) and 4 training copies (4 x 3)
    # trades: a clean forward, 10 KL steps, then the update on the clean and adversarial
    # batch in one forward (2 + 4 passes of a batch); mart: the same without the clean forward
    "trades": (1 + 2 * 10 + 6) / 3,
    "mart": (2 * 10 + 6) / 3,
    "fgsm-pgi": 7 / 3,
    "fgsm-uap": 7 / 3,
    "fgsm-cuap": 7 / 3,
    "fgsm-fuap": 8 / 3,
    "fgsm-pco": 10 / 3,
    "liet": 7 / 3,
    "nuat": 8.5 / 3,
    "gat": 8.5 / 3,
    "elle": 14 / 3,
    "zerograd": 5 / 3,
    "n-aaer": 5 / 3,
}
#: the FastAT Benchmark's training cost relative to FGSM-AT: mean total_training_time of its 3
#: CIFAR-10 seeds over FGSM-AT's, from its benchmark_data.json (issue 21 quotes the same)
FASTAT = {
    "fgsm-pgi": 1.33,
    "fgsm-uap": 1.28,
    "fgsm-cuap": 1.36,
    "fgsm-fuap": 1.47,
    "fgsm-pco": 1.50,
    "liet": 1.31,
    "nuat": 1.47,
    "gat": 1.44,
    "elle": 1.47,
    "zerograd": 0.96,
    "n-aaer": 0.93,
    "n-fgsm": 0.97,
    "free": 0.99,
    "gradalign": 2.81,
}
TARGETS = {"fast": 1.7, "pgd7": 6.0, "n-fgsm": 1.7, "free": 1.1, "gradalign": 3.5}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="preact_resnet18")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--image-size", type=int, default=32, help="square RGB images (default: 32)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument(
        "--clock",
        choices=("auto", "cpu", "wall"),
        default="auto",
        help="what the ratios are measured in (auto: CPU time on a CPU, wall clock on a GPU)",
    )
    p.add_argument("--methods", help="comma-separated subset (default: all; standard first)")
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = p.parse_args()

    device = torch.device(args.device)
    clock = ("wall" if device.type == "cuda" else "cpu") if args.clock == "auto" else args.clock
    torch.manual_seed(0)
    size = args.image_size
    spec = ModelSpec(args.model, args.classes, 3, size, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    model = build_model(spec).to(device).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    variants: dict[str, tuple[Any, Any]] = {"eager": (model, model)}  # (train, attack) models
    if args.compile:
        train_compiled = torch.compile(model)
        variants["compiled"] = (train_compiled, torch.compile(InputGradientsOnly(model)))
        variants["compiled-plain"] = (train_compiled, train_compiled)
    x = torch.rand(args.batch, 3, size, size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    methods = {  # L2 eps 0.5: fast alpha 1.5 eps, pgd7 alpha 2.5 eps / 7, the others' defaults
        "standard": build_method(AttackConfig(method="standard", eps=0.5)),
        "fast": build_method(AttackConfig(method="fast", eps=0.5)),
        "pgd7": build_method(AttackConfig(method="pgd", eps=0.5, steps=7)),
        "n-fgsm": build_method(AttackConfig(method="n-fgsm", eps=0.5)),
        "free": build_method(AttackConfig(method="free", eps=0.5)),
        "gradalign": build_method(AttackConfig(method="gradalign", eps=0.5)),
        "curriculum": build_method(AttackConfig(method="curriculum", eps=0.5)),
        "gaussian": build_method(AttackConfig(method="gaussian", sigma=0.5)),
        "smoothadv1": build_method(AttackConfig(method="smoothadv", eps=0.5, sigma=0.5)),
        "smoothadv1-m4": build_method(
            AttackConfig(method="smoothadv", eps=0.5, sigma=0.5, noise_samples=4)
        ),
        "trades": build_method(AttackConfig(method="trades", eps=0.5)),
        "mart": build_method(AttackConfig(method="mart", eps=0.5)),
        **{  # issue 21's single-step methods
            name: build_method(AttackConfig(method=name, eps=0.5))
            for name in (
                *("fgsm-pgi", "fgsm-pco", "fgsm-uap", "fgsm-cuap", "fgsm-fuap"),
                *("nuat", "gat", "elle", "n-aaer"),
            )
        },
        **{  # L-inf only: 8/255
            name: build_method(AttackConfig(method=name, norm="linf", eps=8 / 255))
            for name in ("zerograd", "liet")
        },
    }
    if args.methods:
        chosen = ["standard", *(m for m in args.methods.split(",") if m != "standard")]
        unknown = sorted(set(chosen) - set(methods))
        if unknown:
            p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(methods)}")
        methods = {name: methods[name] for name in chosen}
    schedule_epochs = max(args.repeats, 2)  # curriculum: one epoch of its schedule per repeat

    def one(name: str, variant: str, repeat: int = 0) -> tuple[float, float]:
        """(CPU seconds, wall-clock seconds) of one training step of ``name``."""
        train_model, attack_model = variants[variant]
        methods[name].start_epoch(repeat, schedule_epochs)
        if name != "liet" or repeat == 0:  # liet: its class-wise start is refreshed at the
            methods[name].start_epoch(repeat, schedule_epochs)  # epoch's first step, not timed
        methods[name].start_batch(torch.arange(args.batch, device=device), args.batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        c0, t0 = time.process_time(), time.perf_counter()
        autocast = autocast_context(args.amp, device)
        loss, _ = training_step(
            train_model, attack_model, methods[name], opt, x, y, autocast=autocast
        )
        float(loss)  # wait for the step to finish
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.process_time() - c0, time.perf_counter() - t0

    for variant in variants:  # warm-up (and compilation)
        for name in methods:
            one(name, variant)
    cpu = {(v, name): list[float]() for v in variants for name in methods}
    wall = {(v, name): list[float]() for v in variants for name in methods}
    for repeat in range(args.repeats):
        for variant in variants:
            for name in methods:
                c, w = one(name, variant, repeat)
                cpu[variant, name].append(c)
                wall[variant, name].append(w)
    print(
        f"{args.model}, batch {args.batch}, {size}x{size}x3, device {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats}, "
        f"ratios in {'CPU time' if clock == 'cpu' else 'wall-clock time'}, "
        f"amp={args.amp}, channels_last={args.channels_last}, compile={args.compile}"
    )
    for variant in variants:
        if len(variants) > 1:
            print(f"-- {variant}")
        times = {name: (cpu if clock == "cpu" else wall)[variant, name] for name in methods}
        report(times, {name: wall[variant, name] for name in methods}, args.batch, clock)


def report(
    times: dict[str, list[float]], wall: dict[str, list[float]], batch: int, clock: str
) -> None:
    """One table: per method its time per step, images/s and ratio to the standard step."""
    med = {name: statistics.median(ts) for name, ts in times.items()}
    if "curriculum" in times:
        med["curriculum"] = statistics.mean(times["curriculum"])  # the schedule's average
    wall_med = {name: statistics.median(ts) for name, ts in wall.items()}
    if "curriculum" in wall:
        wall_med["curriculum"] = statistics.mean(wall["curriculum"])
    head = "cpu s/step" if clock == "cpu" else "s/step"
    print(
        f"{'method':<12}{head:>11}{'wall s':>9}{'img/s':>8}{'ratio':>8}{'floor':>8}{'target':>8}"
        f"{'/fast':>7}{'FastAT':>7}"
    )
    ratios = {name: t / med["standard"] for name, t in med.items()}
    fast = ratios.get("fast")  # the FastAT Benchmark's unit (FGSM-AT)
    for name, t in med.items():
        target, floor = TARGETS.get(name), FLOORS[name]
        verdict = "" if target is None else ("  ok" if ratios[name] <= target else "  ABOVE TARGET")
        if name == "curriculum" and {"fast", "pgd7"} <= set(ratios):  # between them
            inside = ratios["fast"] <= ratios[name] <= ratios["pgd7"]
            verdict = "  between fast and pgd7" if inside else "  OUTSIDE fast..pgd7"
        print(
            f"{name:<12}{t:>11.4f}{wall_med[name]:>9.4f}{batch / t:>8.1f}{ratios[name]:>8.2f}"
            f"{(f'{floor:.2f}' if floor else '-'):>8}{(f'{target:.2f}' if target else '-'):>8}"
            f"{(f'{ratios[name] / fast:.2f}' if fast else '-'):>7}"
            f"{(f'{FASTAT[name]:.2f}' if name in FASTAT else '-'):>7}{verdict}"
        )


if __name__ == "__main__":
    main()
