"""Figure 1 of Goodwin et al. (HPEC 2020): where the time of adversarial training goes.

:func:`plot_figure_one` draws the measured seconds per call over batch size and the estimated
total training time over batch size and over GPU count (:mod:`fastrobust.timing.measure`), with the
measured times of run folders (:mod:`fastrobust.timing.runs_table`) as stars.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastrobust.timing.measure import FORWARD, TRAIN_STEP, Estimate, TimingCurves
from fastrobust.timing.runs_table import RunRecord


def _log_ticks(ax: Any, values: Sequence[int]) -> None:
    """Plain-number ticks at the plotted values of a log x axis."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    if values:
        ax.set_xticks(list(values))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())


def plot_figure_one(
    path: str | Path,
    curves: TimingCurves,
    by_batch: Sequence[Estimate],
    by_gpus: Sequence[Estimate],
    runs: Sequence[RunRecord] = (),
    *,
    title: str = "",
) -> None:
    """Three panels as in the paper's Figure 1: seconds per call over batch size; estimated
    total hours over batch size; estimated hours over GPU count for a fixed global batch.
    Measured total times of run folders are stars, coloured as their method's line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colours: dict[str, str] = {}

    def colour(method: str) -> str:
        if method not in colours:
            colours[method] = f"C{len(colours)}"
        return colours[method]

    ax = axes[0]
    for op in curves.ops():
        if op == TRAIN_STEP:
            continue
        xs = curves.batch_sizes(op)
        label = "no PGD (forward)" if op == FORWARD else f"{op[3:]}-step PGD"
        ax.plot(xs, [curves.seconds(op, b) for b in xs], "o-", label=label)
    xs = curves.batch_sizes(TRAIN_STEP)
    ax.plot(xs, [curves.seconds(TRAIN_STEP, b) for b in xs], "k--", label="training step")
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="seconds per call")
    _log_ticks(ax, curves.batch_sizes(FORWARD))
    ax.set_title(f"one attack execution ({curves.device})", fontsize=9)

    def panel(ax: Any, estimates: Sequence[Estimate], x_of: Callable[[Estimate], int]) -> None:
        for method in dict.fromkeys(e.method for e in estimates):
            pts = [(x_of(e), e.total_s / 3600) for e in estimates if e.method == method]
            ax.plot(*zip(*pts), "o-", color=colour(method), label=f"{method} (lower bound)")
        ax.set(xscale="log", yscale="log", ylabel="hours")

    panel(axes[1], by_batch, lambda e: e.global_batch)
    panel(axes[2], by_gpus, lambda e: e.gpus)
    _log_ticks(axes[1], sorted({e.global_batch for e in by_batch}))
    _log_ticks(axes[2], sorted({e.gpus for e in by_gpus}))
    axes[1].set_xlabel("global batch size")
    axes[2].set_xlabel("GPUs (processes)")
    for r in runs:  # a star where the run's setting lies on the panel's curve
        star = dict(marker="*", ms=14, mec="k", ls="none", color=colour(r.method))
        if by_batch and r.world_size == by_batch[0].gpus:
            axes[1].plot(r.batch_size, r.time_to_last_s / 3600, **star)
        if by_gpus and r.batch_size == by_gpus[0].global_batch:
            axes[2].plot(r.world_size, r.time_to_last_s / 3600, **star)
    if by_batch:
        axes[1].set_title(f"total training time, {by_batch[0].gpus} GPU(s)", fontsize=9)
    if by_gpus:
        axes[2].set_title(
            f"total training time, global batch {by_gpus[0].global_batch}", fontsize=9
        )
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if runs:
        axes[2].plot([], [], "*", ms=10, color="gray", mec="k", label="measured runs")
        axes[2].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
