"""The benchmark's report: one table per threat model (Markdown, HTML, CSV) and the Pareto
plot of AutoAttack accuracy against training cost.

Per method: clean and AutoAttack accuracy as the mean and the min-max over seeds, the
collapsed seeds (criterion printed above the table), the training cost relative to the
baseline method (``fast`` when listed) and in device-hours, the peak device memory, and the
PGD curve's mean accuracy at each multiple of eps.
"""

from __future__ import annotations

import base64
import csv
import html
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fastrobust.study.bench import BenchConfig, BenchRun, Threat


@dataclass
class MethodRow:
    """One method under one threat model, over its seeds."""

    threat: Threat
    label: str
    runs: list[BenchRun]
    cost: float
    """mean training time relative to the baseline's mean"""

    def _values(self, name: str) -> list[float]:
        return [float(getattr(r, name)) for r in self.runs]

    def span(self, name: str) -> tuple[float, float, float]:
        """Mean, min and max over seeds of a run field (``clean``, ``autoattack``)."""
        v = self._values(name)
        return statistics.fmean(v), min(v), max(v)

    @property
    def device_hours(self) -> float:
        """Mean training time of one run, in device-hours."""
        return statistics.fmean(self._values("train_s")) / 3600

    @property
    def peak_memory(self) -> str:
        values = [r.peak_memory_mb for r in self.runs if r.peak_memory_mb is not None]
        return f"{max(values):.0f} MiB" if values else "n/a (CPU)"

    @property
    def collapsed(self) -> str:
        seeds = [f"{r.seed}{' diverged' if r.diverged else ''}" for r in self.runs if r.collapsed]
        return f"{len(seeds)}/{len(self.runs)}" + (f" (seed {', '.join(seeds)})" if seeds else "")

    def curve(self) -> list[tuple[float, float]]:
        """The PGD curve's mean accuracy at each eps, over seeds."""
        grid = [e for e, _ in self.runs[0].pgd_curve]
        return [
            (e, statistics.fmean(r.pgd_curve[i][1] for r in self.runs)) for i, e in enumerate(grid)
        ]


def method_rows(config: BenchConfig, runs: list[BenchRun]) -> list[MethodRow]:
    """The table rows: every (threat, method) in protocol order."""
    rows = []
    for threat in config.threats:
        mine = [r for r in runs if r.threat == threat]
        base = [r.train_s for r in mine if r.label == config.baseline_label]
        base_s = statistics.fmean(base) if base else 1.0
        for spec in config.methods:
            seeds = [r for r in mine if r.label == spec.label]
            cost = statistics.fmean(r.train_s for r in seeds) / base_s
            rows.append(MethodRow(threat, spec.label, seeds, cost))
    return rows


def _pct(span: tuple[float, float, float]) -> str:
    mean, low, high = (100 * v for v in span)
    return f"{mean:.2f} ({low:.2f}-{high:.2f})"


HEADER = [
    "method", "clean % mean (min-max)", "AutoAttack % mean (min-max)", "collapsed seeds",
    "cost vs {base}", "device-hours per run", "peak device memory", "PGD curve (eps: acc %)",
]  # fmt: skip


def _cells(row: MethodRow) -> list[str]:
    curve = ", ".join(f"{e:.3g}: {100 * a:.1f}" for e, a in row.curve())
    return [
        row.label, _pct(row.span("clean")), _pct(row.span("autoattack")), row.collapsed,
        f"{row.cost:.2f}x", f"{row.device_hours:.4f}", row.peak_memory, curve,
    ]  # fmt: skip


#: the autoattack section's ``weights`` in words
_WEIGHTS = {
    "auto": "the weight average where the run kept one",
    "ema": "the weight average",
    "raw": "the trained weights (not the average)",
}


def _setup(config: BenchConfig, device: torch.device) -> list[str]:
    from fastrobust.study.bench import collapse_criterion
    from fastrobust.timing.measure import describe_device

    aa = config.autoattack
    attack = " -> ".join(aa.attacks)
    limit = f"{aa.limit} test points" if aa.limit else "the whole test set"
    return [
        f"dataset {config.dataset}, model {config.model}, seeds {config.seeds}",
        f"training: {config.training or 'TrainConfig defaults'}",
        f"AutoAttack: {attack} on {limit}, {aa.checkpoint}.pt of each run, {_WEIGHTS[aa.weights]}",
        f"collapse: {collapse_criterion(config)}",
        f"costs: training wall-clock time relative to {config.baseline_label} under the same "
        f"threat model; measured on {describe_device(device)}",
        f"written {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]


def write_bench_report(
    config: BenchConfig, runs: list[BenchRun], out: Path, *, device: torch.device
) -> dict[str, Path]:
    """``bench.md``, ``bench.html``, ``bench.csv``, ``runs.csv`` and ``pareto.png`` in ``out``."""
    rows = method_rows(config, runs)
    header = [h.format(base=config.baseline_label) for h in HEADER]
    paths = {k: out / f"bench.{k}" for k in ("md", "html", "csv")}
    paths["runs"], paths["png"] = out / "runs.csv", out / "pareto.png"
    setup = _setup(config, device)
    md = [f"# {config.title}", "", *[f"- {line}" for line in setup], ""]
    body = []
    for threat in config.threats:
        mine = [r for r in rows if r.threat == threat]
        md += [f"## {threat.norm} eps {threat.eps:.6g}", "", "| " + " | ".join(header) + " |"]
        md.append("|" + "---|" * len(header))
        md += ["| " + " | ".join(_cells(r)) + " |" for r in mine]
        md.append("")
        cells = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>"
            for r in mine
        )
        heads = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body.append(f"<h2>{html.escape(threat.label)}</h2><table><tr>{heads}</tr>{cells}</table>")
    certified = certified_tables(config, out)
    md += certified
    if certified:
        body.append("<pre>" + html.escape("\n".join(certified)) + "</pre>")
    md += ["![Pareto plot](pareto.png)", ""]
    paths["md"].write_text("\n".join(md))
    plot_pareto(rows, config, paths["png"])
    image = base64.b64encode(paths["png"].read_bytes()).decode()
    items = "".join(f"<li>{html.escape(line)}</li>" for line in setup)
    paths["html"].write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(config.title)}"
        "</title><style>table{border-collapse:collapse}td,th{border:1px solid #999;"
        "padding:3px 6px}</style></head><body>"
        f"<h1>{html.escape(config.title)}</h1><ul>{items}</ul>{''.join(body)}"
        f"<img alt='Pareto plot' src='data:image/png;base64,{image}'></body></html>\n"
    )
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["norm", "eps", "method", "clean_mean", "clean_min", "clean_max", "aa_mean",
                    "aa_min", "aa_max", "collapsed", "seeds", "cost_vs_baseline",
                    "device_hours", "peak_memory"])  # fmt: skip
        for r in rows:
            w.writerow([r.threat.norm, r.threat.eps, r.label, *r.span("clean"),
                        *r.span("autoattack"), sum(x.collapsed for x in r.runs), len(r.runs),
                        r.cost, r.device_hours, r.peak_memory])  # fmt: skip
    with paths["runs"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["norm", "eps", "method", "seed", "clean", "autoattack", "train_s",
                    "peak_memory_mb", "monitor_flagged", "collapsed"])  # fmt: skip
        for x in runs:
            w.writerow([x.threat.norm, x.threat.eps, x.label, x.seed, x.clean, x.autoattack,
                        x.train_s, x.peak_memory_mb, x.flagged, x.collapsed])  # fmt: skip
    return paths


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (no more cost for at least the accuracy,
    and better in one), by increasing cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(rows: list[MethodRow], config: BenchConfig, path: Path) -> None:
    """AutoAttack accuracy (mean, min-max bars) against cost, one panel per threat model."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6 * len(config.threats), 4.4), dpi=110)
    for k, threat in enumerate(config.threats):
        ax = fig.add_subplot(1, len(config.threats), k + 1)
        mine = [r for r in rows if r.threat == threat]
        points = [(r.cost, 100 * r.span("autoattack")[0]) for r in mine]
        for r, (x, y) in zip(mine, points):
            _, low, high = r.span("autoattack")
            ax.errorbar([x], [y], yerr=[[y - 100 * low], [100 * high - y]], fmt="o", capsize=3)
            ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = pareto_front(points)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", lw=0.8,
                label="Pareto front")  # fmt: skip
        ax.set_xlabel(f"training cost (x {config.baseline_label})")
        ax.set_ylabel("AutoAttack accuracy % (mean, min-max over seeds)")
        ax.set_title(f"{config.dataset} {threat.norm} eps {threat.eps:.4g}", fontsize="small")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)


def certified_tables(config: BenchConfig, out: Path) -> list[str]:
    """Markdown tables of the certified L2 accuracy per radius (randomized smoothing, when the
    protocol has a ``certify`` section): per method the mean and min-max over seeds of each
    seed folder's ``curves/certified.json``."""
    import json

    from fastrobust.study.folder import StudyFolder

    lines: list[str] = []
    for threat in config.threats:
        docs = [
            json.loads(path.read_text())
            for seed in config.seeds
            if (
                path := StudyFolder(threat.seed_folder(out, seed)).curves / "certified.json"
            ).is_file()
        ]
        if not docs:
            continue
        first = next(iter(docs[0]["models"].values()))
        radii, sigma = [float(r) for r in first["radii"]], float(first["sigma"])
        lines += [
            f"### certified L2 accuracy, {threat.norm} eps {threat.eps:.6g} (randomized "
            f"smoothing, sigma {sigma:g}, {len(docs)} seeds: mean (min-max))",
            "",
            "| method | " + " | ".join(f"r = {r:g}" for r in radii) + " |",
            "|---|" + "---|" * len(radii),
        ]
        for spec in config.methods:
            per_seed = [d["models"][spec.label]["certified_accuracy"] for d in docs]
            cells = []
            for i in range(len(radii)):
                values = [100 * float(acc[i]) for acc in per_seed]
                cells.append(f"{statistics.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})")
            lines.append(f"| {spec.label} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
