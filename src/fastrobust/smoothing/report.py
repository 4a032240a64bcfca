"""Reports of certification: ``certified.json`` / ``.csv`` / ``.png``.

The plot is certified accuracy against L2 radius (Cohen et al. 2019, Figure 1's kind), one
line per model; the smoothed-classifier attack's accuracy at its radii as crosses of the same
colour (the empirical upper bound), and, when a ``robustness.json`` of ``fastrobust eval`` is
given, the base models' empirical curves dotted.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from fastrobust.smoothing.results import CertificationCurve


def format_table(curves: dict[str, CertificationCurve]) -> str:
    """Rows radius, columns models: certified accuracy (the text table the CLI prints)."""
    labels = list(curves)
    first = curves[labels[0]]
    width = max(9, *(len(label) for label in labels))
    lines = [f"{'radius':>8}  " + "  ".join(f"{label:>{width}}" for label in labels)]
    for j, r in enumerate(first.radii):
        row = "  ".join(f"{c.accuracy[j]:>{width}.4f}" for c in curves.values())
        lines.append(f"{r:>8g}  {row}")
    abstain = "  ".join(f"{c.abstain_rate:>{width}.4f}" for c in curves.values())
    lines.append(f"{'abstain':>8}  {abstain}")
    return "\n".join(lines)


def read_empirical(path: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """Model -> (eps, accuracy) from a ``robustness.json`` of ``fastrobust eval`` (L2 only)."""
    doc = json.loads(Path(path).read_text())
    if doc.get("norm") != "l2":
        return {}
    eps = [float(e) for e in doc["eps"]]
    return {label: (eps, list(m["accuracy"])) for label, m in doc.get("models", {}).items()}


def write_report(
    out_dir: str | Path,
    curves: dict[str, CertificationCurve],
    *,
    extra: dict[str, Any] | None = None,
    empirical: dict[str, tuple[list[float], list[float]]] | None = None,
) -> dict[str, Path]:
    """Write ``certified.json``, ``certified.csv`` and ``certified.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"certified.{k}" for k in ("json", "csv", "png")}
    doc = {**(extra or {}), "models": {label: c.to_dict() for label, c in curves.items()}}
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "sigma", "radius", "certified_accuracy", "certified", "n", "subset"])
        for label, c in curves.items():
            for r, acc, count in zip(c.radii, c.accuracy, c.counts):
                w.writerow([label, f"{c.sigma:g}", f"{r:g}", f"{acc:.6f}", count, c.n, c.subset])
    plot_certified(curves, paths["png"], empirical=empirical or {})
    return paths


def plot_certified(
    curves: dict[str, CertificationCurve],
    path: str | Path,
    *,
    empirical: dict[str, tuple[list[float], list[float]]],
) -> None:
    """Certified accuracy vs radius per model, its attack check and eval's empirical curve."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    ax = fig.add_subplot()
    for label, c in curves.items():
        (line,) = ax.plot(c.radii, c.accuracy, drawstyle="steps-post", label=f"{label} certified")
        if c.check is not None:
            ax.plot(
                c.check.radii,
                c.check.attacked,
                "x",
                color=line.get_color(),
                label=f"{label} smoothed, attacked",
            )
        if label in empirical:
            eps, acc = empirical[label]
            ax.plot(eps, acc, ":", color=line.get_color(), label=f"{label} base, attacked")
    first = next(iter(curves.values()))
    ax.set_xlabel("L2 radius")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(
        f"{first.data.get('dataset') or 'data'}, {first.subset}: sigma {first.sigma:g}, "
        f"n {first.n_samples}, alpha {first.alpha:g}",
        fontsize="small",
    )
    fig.tight_layout()
    fig.savefig(path)
