"""Catastrophic-overfitting study: the setting where `fast` collapses, and who survives it.

Catastrophic overfitting (Wong et al. 2020; Andriushchenko & Flammarion 2020): within an epoch
or two, accuracy under PGD falls to about zero while accuracy under the single-step training
attack keeps rising. The default setting (``--setting eps0.15``, found by the search recorded
in docs/catastrophic_overfitting.md) makes `fast` collapse with a fixed seed while 7-step `pgd`
learns a robust model; every other method is trained with the same data, model, schedule, seed
and epoch budget. ``--setting eps0.2`` is the first study's setting (`fast` collapses, but
`pgd`, `n-fgsm` and `gradalign` stay at chance level there).

Per method it reads ``overfit_check_pgd_acc`` (PGD accuracy on the fixed training check batch)
and ``train_acc`` (accuracy under the method's own training attack) from the run's
metrics.jsonl, finds the collapse epochs (the first epoch at which the check accuracy is
<= 0.05 after having been above it, and the first from which it stays <= 0.05 to the end), and
evaluates the final weights on all 360 test digits: clean, and 20-step L-inf PGD with 5
restarts (worst case per sample) at the training eps. It writes the figure (check PGD accuracy
per epoch, one line per method, both collapse epochs marked) and prints a markdown table.

    python benchmarks/catastrophic_overfitting.py [--setting eps0.15|eps0.2] [--methods fast,pgd]
        [--epochs 40] [--seed 0] [--out-dir /tmp/co-study] [--figure docs/figures/...png]
    python benchmarks/catastrophic_overfitting.py --from-runs /tmp/co-study   # re-summarise
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from fastrobust import fit, load_model, pgd, threat_model
from fastrobust.data import load_dataset
from fastrobust.data.base import to_float
from fastrobust.training.config import TrainConfig

#: the settings the study can run (``--setting``), shared by every method; method-specific
#: settings in :func:`methods`. ``eps0.15`` (the default) is where `fast` collapses while
#: `pgd` learns a robust model; ``eps0.2`` is the first study's setting, where `fast` collapses
#: too but `pgd`, `n-fgsm` and `gradalign` never leave chance level (docs/catastrophic_overfitting.md).
_COMMON: dict[str, Any] = dict(
    dataset="digits",
    image_size=16,
    norm="linf",
    schedule="constant",
    lr=0.1,
    seed=0,
    overfit_check_size=128,
    overfit_check_every=1,  # the collapse epoch is read from the check after every epoch
    eval_steps=10,
)
SETTINGS: dict[str, dict[str, Any]] = {
    "eps0.15": {**_COMMON, "eps": 0.15, "batch_size": 32, "epochs": 40},
    "eps0.2": {**_COMMON, "eps": 0.2, "batch_size": 64, "epochs": 30},
}
DEFAULT_SETTING = "eps0.15"


def methods(setting: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method: fast and gradalign take the large step (2 * eps, Wong et al. 2020's failing
    FGSM-RS setting); the others keep their defaults (n-fgsm: noise 2*eps, step eps; pgd: 7
    steps of 2.5*eps/7; curriculum: 1 step growing linearly to 7; free: 4 replays, step eps)."""
    big_step = 2 * setting["eps"]
    return {
        "fast": dict(method="fast", alpha=big_step),
        "n-fgsm": dict(method="n-fgsm"),
        "gradalign": dict(method="gradalign", alpha=big_step),
        "curriculum": dict(method="curriculum"),
        "free": dict(method="free"),
        "pgd": dict(method="pgd"),
        # issue 21's single-step methods (docs/single_step.md): elle adds its penalty to the
        # failing fast step, as gradalign; zerograd's default step is 2 * eps already; the
        # others keep their defaults (one step of eps)
        "fgsm-pgi": dict(method="fgsm-pgi"),
        "fgsm-pco": dict(method="fgsm-pco"),
        "fgsm-uap": dict(method="fgsm-uap"),
        "fgsm-cuap": dict(method="fgsm-cuap"),
        "fgsm-fuap": dict(method="fgsm-fuap"),
        "liet": dict(method="liet"),
        "nuat": dict(method="nuat"),
        "gat": dict(method="gat"),
        "elle": dict(method="elle", alpha=big_step),
        "zerograd": dict(method="zerograd"),
        "n-aaer": dict(method="n-aaer"),
    }


COLLAPSED = 0.05  # check-batch PGD accuracy at or below this counts as collapsed


def collapse_epoch(pgd_acc: list[float]) -> int | None:
    """First epoch (1-based) from which the check-batch PGD accuracy stays <= COLLAPSED to the
    end of training, after it had been above it (None: no collapse)."""
    epoch = None
    for i in range(len(pgd_acc) - 1, 0, -1):
        if pgd_acc[i] > COLLAPSED:
            break
        epoch = i + 1
    if epoch is None or max(pgd_acc[: epoch - 1]) <= COLLAPSED:
        return None
    return epoch


def first_collapse(pgd_acc: list[float]) -> int | None:
    """First epoch (1-based) at which the check-batch PGD accuracy is <= COLLAPSED after an
    earlier epoch above it (None: never); unlike :func:`collapse_epoch` it may recover later."""
    for i in range(1, len(pgd_acc)):
        if pgd_acc[i] <= COLLAPSED and max(pgd_acc[:i]) > COLLAPSED:
            return i + 1
    return None


def test_accuracy(run_dir: Path, setting: dict[str, Any]) -> tuple[float, float]:
    """Clean and PGD-20 (5 restarts) accuracy of the final weights on the whole test split."""
    data = load_dataset(setting["dataset"], image_size=setting.get("image_size"))
    x, y = to_float(data.test_x), data.test_y
    model = load_model(run_dir / "last.pt")
    eps = setting["eps"]
    torch.manual_seed(0)
    x_adv = pgd(
        model,
        x,
        y,
        threat_model(setting["norm"], eps),
        steps=20,
        step_size=2.5 * eps / 20,
        restarts=5,
    )
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
        robust = float((model(x_adv).argmax(1) == y).float().mean())
    return clean, robust


def plot(curves: dict[str, dict[str, Any]], path: Path, setting: dict[str, Any]) -> None:
    """Left: check-batch PGD accuracy per epoch (collapse epochs marked); right: accuracy under
    each method's own training attack, which keeps rising through a collapse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, c in curves.items():
        epochs = range(1, len(c["pgd"]) + 1)
        (line,) = left.plot(epochs, c["pgd"], marker=".", label=name)
        right.plot(epochs, c["train"], marker=".", color=line.get_color(), label=name)
        first, stays = c.get("first_collapse"), c["collapse"]
        if stays is not None:
            for ax in (left, right):
                if first is not None and first != stays:
                    ax.axvline(first, color=line.get_color(), linestyle="--", linewidth=1)
                ax.axvline(stays, color=line.get_color(), linestyle=":", linewidth=1)
            e = first or stays
            text = f"{name} collapses: <= {COLLAPSED:g} from epoch {e}"
            if first is not None and first != stays:
                text += f",\nfor good from epoch {stays}"
            left.annotate(
                text,
                (e, c["pgd"][e - 1]),
                xytext=(max(e - 12, 1), 0.85),  # above the curves, which stay below 0.7 here
                color=line.get_color(),
                fontsize=8,
                arrowprops={"arrowstyle": "->", "color": line.get_color()},
            )
    size = setting.get("image_size") or 8
    fig.suptitle(
        f"digits {size}x{size}, small CNN, {setting['norm']} eps {setting['eps']:g}, "
        f"{setting['schedule']} lr {setting['lr']:g}, batch {setting['batch_size']}, "
        f"seed {setting['seed']}",
        fontsize=9,
    )
    left.set_ylabel("accuracy")
    left.set_title("PGD-10 on the fixed training check batch", fontsize=9)
    right.set_title("under the method's own training attack", fontsize=9)
    for ax in (left, right):
        ax.axhline(0.1, color="grey", linewidth=0.8, linestyle="--")  # chance, 10 classes
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.02, 1.0)
        ax.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarise(run_dir: Path, setting: dict[str, Any]) -> dict[str, Any]:
    """One method's curves (from metrics.jsonl), collapse epoch, test accuracy and train time."""
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    pgd_acc = [r["overfit_check_pgd_acc"] for r in rows]
    clean, robust = test_accuracy(run_dir, setting)
    return {
        "pgd": pgd_acc,
        "train": [r["train_acc"] for r in rows],
        "collapse": collapse_epoch(pgd_acc),
        "first_collapse": first_collapse(pgd_acc),
        "clean": clean,
        "robust": robust,
        "seconds": rows[-1]["elapsed_s"],
        "run_dir": str(run_dir),
    }


FIGURES = {
    "eps0.15": "docs/figures/catastrophic_overfitting.png",
    "eps0.2": "docs/figures/catastrophic_overfitting_eps0.2.png",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default=DEFAULT_SETTING)
    p.add_argument("--methods", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--epochs", type=int, default=None, help="default: the setting's")
    p.add_argument("--seed", type=int, default=None, help="default: the setting's (0)")
    p.add_argument("--out-dir", default="/tmp/co-study")
    p.add_argument("--figure", default=None, help="default: the setting's, under docs/figures")
    p.add_argument(
        "--from-runs",
        nargs="+",
        metavar="DIR",
        help="summarise finished runs instead of training: folders holding <method>-* run folders",
    )
    args = p.parse_args()
    torch.set_num_threads(1)  # small model: one thread is faster on a shared CPU
    setting = dict(SETTINGS[args.setting])
    for key in ("epochs", "seed"):
        if getattr(args, key) is not None:
            setting[key] = getattr(args, key)
    per_method = methods(setting)
    names = args.methods.split(",") if args.methods else list(per_method)
    figure = Path(args.figure or FIGURES[args.setting])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    curves: dict[str, dict[str, Any]] = {}
    for name in names:
        if args.from_runs:
            found = sorted(f for d in args.from_runs for f in Path(d).glob(f"{name}-2*"))
            if not found:
                raise SystemExit(f"no {name}-* run folder in {' '.join(args.from_runs)}")
            run_dir = found[-1]
        else:
            cfg = TrainConfig(
                **{**setting, **per_method[name]},
                out_dir=args.out_dir,
                name=f"{name}-{stamp}",
                progress=False,
                eval_every=setting["epochs"],
            )
            run_dir = fit(cfg).run_dir
        curves[name] = summarise(run_dir, setting)
    plot(curves, figure, setting)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    Path(args.out_dir, f"study-{stamp}.json").write_text(json.dumps(curves, indent=1))
    print(f"setting {args.setting}: {setting}; per method: {per_method}")
    print(
        "| method | epochs | collapse epoch: first <= 0.05 / stays from | "
        "check-batch PGD acc: best (epoch) / final | training-attack acc: at best -> final | "
        "test clean | test PGD-20x5 | train time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, c in curves.items():
        best = max(range(len(c["pgd"])), key=lambda i: c["pgd"][i])
        first, stays = c["first_collapse"], c["collapse"]
        print(
            f"| {name} | {len(c['pgd'])} | {first or '-'} / {stays or '-'} "
            f"| {c['pgd'][best]:.2f} ({best + 1}) / {c['pgd'][-1]:.2f} "
            f"| {c['train'][best]:.2f} -> {c['train'][-1]:.2f} "
            f"| {c['clean']:.1%} | {c['robust']:.1%} | {c['seconds']:.0f} s |"
        )
    print(f"figure: {figure}")


if __name__ == "__main__":
    main()
