"""Reports of robustness curves: the text table, ``robustness.json``/``.csv`` and the plot.

The plot is the paper's Figure 2 (Goodwin et al., HPEC 2020): adversarial accuracy against
eps, one line per model, each model's training eps marked.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from fastrobust.evaluation.results import RobustnessCurve


def format_table(curves: dict[str, RobustnessCurve]) -> str:
    """Rows eps, columns models: the text table the CLI prints."""
    labels = list(curves)
    first = curves[labels[0]]
    width = max(8, *(len(label) for label in labels))
    head = f"{'eps':>8}  " + "  ".join(f"{label:>{width}}" for label in labels)
    lines = [head]
    if 0 not in first.eps:
        clean = "  ".join(f"{c.clean_accuracy:>{width}.4f}" for c in curves.values())
        lines.append(f"{'clean':>8}  {clean}")
    for j, eps in enumerate(first.eps):
        lines.append(
            f"{eps:>8g}  " + "  ".join(f"{c.accuracy[j]:>{width}.4f}" for c in curves.values())
        )
    return "\n".join(lines)


def format_fooled_by(curves: dict[str, RobustnessCurve]) -> str:
    """Per model, rows eps: how many points each attack fooled first (AutoAttack's log), the
    points misclassified clean, those fooled at a smaller eps, and those left robust."""
    lines = []
    for label, c in curves.items():
        columns = ["clean", "smaller_eps", *c.attacks]
        width = max(8, *(len(name) for name in columns))
        lines.append(f"fooled first by ({label}, of {c.n} points):")
        lines.append(f"{'eps':>8}  " + "  ".join(f"{n:>{width}}" for n in [*columns, "robust"]))
        for j, eps in enumerate(c.eps):
            counts = [c.fooled_by[j][name] for name in columns] + [c.robust[j]]
            lines.append(f"{eps:>8g}  " + "  ".join(f"{v:>{width}}" for v in counts))
    return "\n".join(lines)


def describe_attack(curve: RobustnessCurve) -> str:
    """``"l2 pgd, 20 steps x 10 restarts (step 2.5*eps/steps, start ball)"``, or each attack's
    budget for the attacks that have their own (and AutoAttack's versions)."""
    if curve.version is None and all(
        _said_by_steps_and_restarts(curve, b) for b in _budgets(curve)
    ):
        return (
            f"{curve.norm} {' -> '.join(curve.attacks)}, {curve.steps} steps x {curve.restarts} "
            f"restarts (pgd step {curve.step_size_factor:g}*eps/steps, {curve.random_start} start)"
        )
    parts = [
        f"{name} ({', '.join(f'{k} {v}' for k, v in curve.budgets.get(name, {}).items())})"
        for name in curve.attacks
    ]
    head = f"{curve.norm} {curve.version}: " if curve.version else f"{curve.norm} "
    return head + " -> ".join(parts)


#: budget entries the short description (``N steps x R restarts (pgd step ...)``) states
_SHORT_FORM = {"steps", "restarts", "eot", "step_size"}


def _budgets(curve: RobustnessCurve) -> list[dict[str, Any]]:
    return [curve.budgets.get(name, {}) for name in curve.attacks]


def _said_by_steps_and_restarts(curve: RobustnessCurve, budget: dict[str, Any]) -> bool:
    """Whether the short description states this attack's whole budget (as it does for the
    restartable attacks, ``AttackSpec.restartable``: PGD, APGD-CE, APGD-DLR without EOT)."""
    return (
        set(budget) <= _SHORT_FORM
        and budget.get("steps") == curve.steps
        and budget.get("restarts") == curve.restarts
        and budget.get("eot", 1) == 1
    )


def write_report(
    out_dir: str | Path, curves: dict[str, RobustnessCurve], *, extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``robustness.json``, ``robustness.csv`` and ``robustness.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(curves.values()))
    paths = {
        "json": out / "robustness.json",
        "csv": out / "robustness.csv",
        "png": out / "robustness.png",
    }
    doc = {
        "subset": first.subset,
        "data": first.data,
        "norm": first.norm,
        "eps": first.eps,
        "attack": describe_attack(first),
        **(extra or {}),
        "models": {label: c.to_dict() for label, c in curves.items()},
    }
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["model", "norm", "eps", "accuracy", "robust", "n", "subset", "attack", "warnings"]
            + ["fooled_first_by", "seed"]
        )
        for label, c in curves.items():
            for j, eps in enumerate(c.eps):
                w.writerow(
                    [
                        label,
                        c.norm,
                        f"{eps:g}",
                        f"{c.accuracy[j]:.6f}",
                        c.robust[j],
                        c.n,
                        c.subset,
                        describe_attack(c),
                        len(c.warnings),
                        ";".join(f"{k}:{v}" for k, v in c.fooled_by[j].items()),
                        c.seed,
                    ]
                )
    plot_curves(curves, paths["png"])
    return paths


def plot_curves(curves: dict[str, RobustnessCurve], path: str | Path) -> None:
    """Accuracy vs eps, one line per model, each model's training eps as a dotted line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    ax = fig.add_subplot()
    first = next(iter(curves.values()))
    for label, c in curves.items():
        (line,) = ax.plot(c.eps, c.accuracy, marker="o", label=label)
        trained = c.model_info
        if trained.adversarially_trained and trained.norm == c.norm and trained.eps is not None:
            ax.axvline(
                trained.eps,
                linestyle=":",
                color=line.get_color(),
                label=f"{label} training eps",
            )
    ax.set_xlabel(f"{first.norm} eps")
    ax.set_ylabel("adversarial accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    dataset = first.data.get("dataset") or "data"
    ax.set_title(f"{dataset}, {first.subset}\n{describe_attack(first)}", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
