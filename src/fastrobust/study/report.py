"""The study report: ``report.md`` and a self-contained ``report.html`` a person reads.

It follows the paper (Goodwin et al., HPEC 2020): its claims checked first, then the setup,
training time (Table I, Figure 1), robustness over eps (Figure 2, with the masking-check
verdicts and, when several attacks ran, which attack fooled each point first), the three
visualisations for every model side by side (Figures 3-5), and the perceptual-alignment
score that puts a number on Figure 5. Every number comes from :class:`StudyResults`.
"""

from __future__ import annotations

from pathlib import Path

from fastrobust.study.claims import check_claims
from fastrobust.study.document import Bullets, Document, Figure, Paragraph, Section, Table
from fastrobust.study.paper import CIFAR10_RESNET50, is_paper_setup
from fastrobust.study.results import StudyResults

REPORT_MD, REPORT_HTML = "report.md", "report.html"

_FIGURE_TEXT = {
    "features": (
        "Figure 3: feature visualisation",
        "From the same uniform-noise seed, each image maximises one node of the representation "
        "layer (nodes drawn at random from each model's active ones). What to look for (the "
        "paper's finding): robust models turn noise into strokes and shapes; a standard "
        "model's result stays noise-like.",
    ),
    "interpolate": (
        "Figure 4: interpolation through representation space",
        "Each row goes from a test image x1 (left) to a test image of another class x2 (right); "
        "the images between are found from noise so that their representation is "
        "lam*f(x1) + (1-lam)*f(x2). What to look for (the paper's finding): robust models "
        "morph one image into the other; a standard model's in-between images are noise.",
    ),
    "targeted": (
        "Figure 5: large targeted perturbations",
        "The top row holds test images of other classes; each model's row perturbs them toward "
        "the class named above the column (p: the model's probability of the target). What to "
        "look for (the paper's finding): robust models draw the target; a standard model "
        "reaches it with speckle. The alignment score below puts a number on this.",
    ),
}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


# -- sections ---------------------------------------------------------------------------------
def _claims(doc: Document, results: StudyResults) -> None:
    sec = doc.section("The paper's claims, checked")
    verdicts = check_claims(results)
    held = [v.claim for v in verdicts if v.holds]
    failed = [v.claim for v in verdicts if v.holds is False]
    unchecked = [v.claim for v in verdicts if v.holds is None]
    summary = f"{len(held)} of {len(verdicts)} claims hold on this study's data"
    if failed:
        summary += f"; does not hold: {', '.join(failed)}"
    if unchecked:
        summary += f"; not checked (no data): {', '.join(unchecked)}"
    sec.add(
        Paragraph(
            f"{summary}. Each line is computed from this study's measurements; the criterion "
            "that decides 'holds' is printed with it."
        )
    )
    sec.add(*verdicts)


def _setup(doc: Document, results: StudyResults) -> None:
    sec = doc.section("Setup")
    sec.add(Table(["", ""], [[k, v] for k, v in results.setup]))
    if results.stage_times:
        rows = [[stage, _seconds(t)] for stage, t in results.stage_times.items()]
        rows.append(["total", _seconds(sum(results.stage_times.values()))])
        sec.add(
            Table(
                ["stage", "wall time"],
                rows,
                "Wall-clock time of each stage when it last ran (a stage reused from the cache "
                "keeps the time of the run that made it).",
            )
        )


def _timing(doc: Document, results: StudyResults) -> None:
    sec = doc.section("Training time (Table I, Figure 1)")
    if results.table_one:
        base = next((r["run"] for r in results.table_one if r["rel_last"] == 1), "the first run")
        rows = [
            [
                run.label,
                run.method
                + (
                    f" ({run.attack_steps} step{'s' if run.attack_steps > 1 else ''})"
                    if run.attack_steps
                    else ""
                ),
                str(row["epochs"]),
                _seconds(row["hours_to_last"] * 3600),
                "-" if row["hours_to_best"] is None else _seconds(row["hours_to_best"] * 3600),
                _fmt(row["rel_last"]),
                _fmt(row["rel_best"]),
                str(row["best_epoch"]),
                f"{_pct(row['best_acc'])} ({row['best_by']})",
            ]
            for run, row in zip(results.runs, results.table_one)
        ]
        sec.add(
            Table(
                [
                    "run",
                    "method",
                    "epochs",
                    "time to last",
                    "time to best",
                    "rel. last",
                    "rel. best",
                    "best epoch",
                    "best validation accuracy",
                ],
                rows,
                f"Table I: wall-clock time to the last and to the best epoch (validation "
                f"included), relative to {base}. Best = highest adversarial validation accuracy "
                "(clean accuracy for standard training).",
            )
        )
    else:
        sec.add(Paragraph("Table I was not made (the table1 stage did not run)."))
    if results.step_seconds:
        std = results.step_seconds.get("standard")
        rows = [
            [m, f"{s * 1000:.2f} ms", _fmt(s / std) if std else "-"]
            for m, s in results.step_seconds.items()
        ]
        sec.add(
            Table(
                ["method", "one training step", "relative to standard"],
                rows,
                f"Cost of one training step (attack + forward + backward + update) at batch "
                f"{results.timing_batch}, measured on this device.",
            )
        )
    if "figure1" in results.figures:
        sec.add(
            Figure(
                results.figures["figure1"],
                "Figure 1 on this device. Left: seconds per call of a forward pass, a training "
                "step and a K-step PGD attack over batch size. Middle: lower bound on the total "
                "training time over the global batch size. Right: over the number of GPUs for a "
                "fixed global batch (an estimate from the measured costs; stars: this study's "
                "runs).",
            )
        )


def _robustness(doc: Document, results: StudyResults) -> None:
    sec = doc.section("Robustness over eps (Figure 2)")
    if not results.curves:
        sec.add(Paragraph("No robustness curves (the curves stage did not run)."))
        return
    first = next(iter(results.curves.values()))
    sec.add(
        Paragraph(
            f"Adversarial accuracy on {first['subset']} under {results.curve_attack}. A point "
            "counts as robust at eps only if no restart of any attack at that eps or a "
            f"smaller one fools it. The training eps ({results.config.eps:g}) is the dotted "
            "line."
        )
    )
    if "curves" in results.figures:
        sec.add(Figure(results.figures["curves"], "Accuracy under attack against eps.", "720px"))
    if "certified" in results.figures:  # the config's certify section (docs/certification.md)
        sec.add(
            Figure(
                results.figures["certified"],
                "Certified L2 accuracy of the smoothed models against radius (Cohen et al. "
                "2019), the smoothed-classifier attack's accuracy as crosses, each base model's "
                "curve under attack dotted (curves/certified.json).",
                "720px",
            )
        )
    labels = list(results.curves)
    rows = [["clean", *(_pct(c["clean_accuracy"]) for c in results.curves.values())]]
    for j, eps in enumerate(first["eps"]):
        mark = " (training eps)" if abs(eps - results.config.eps) < 1e-9 else ""
        rows.append([f"{eps:g}{mark}", *(_pct(c["accuracy"][j]) for c in results.curves.values())])
    sec.add(Table(["eps", *labels], rows, "Accuracy under attack (rows: eps; columns: models)."))
    if len(first["attacks"]) > 1:
        _fooled_by(sec, results)
    _masking(sec, results)


def _fooled_by(sec: Section, results: StudyResults) -> None:
    attacks = next(iter(results.curves.values()))["attacks"]
    rows = []
    for label, c in results.curves.items():
        for eps, counts in zip(c["eps"], c["fooled_by"]):
            if eps == 0:
                continue
            rows.append(
                [
                    label,
                    f"{eps:g}",
                    *(str(counts.get(a, 0)) for a in attacks),
                    str(counts.get("smaller_eps", 0)),
                    str(counts.get("clean", 0)),
                ]
            )
    sec.add(
        Table(
            [
                "model",
                "eps",
                *(f"fooled first by {a}" for a in attacks),
                "at a smaller eps",
                "wrong when clean",
            ],
            rows,
            "Which attack of the cascade fooled each test point first (later attacks run only "
            "on points the earlier ones left robust).",
        )
    )


def _masking(sec: Section, results: StudyResults) -> None:
    names: list[str] = []
    for c in results.curves.values():
        for check in c.get("checks", []):
            if check["name"] not in names:
                names.append(check["name"])
    if not names:
        return
    rows = []
    for label, c in results.curves.items():
        by = {check["name"]: check for check in c.get("checks", [])}
        rows.append(
            [label, *("pass" if by[n]["passed"] else "FAIL" if n in by else "-" for n in names)]
        )
    sec.add(
        Table(
            ["model", *names],
            rows,
            "Gradient-masking checks (logits, determinism, non-zero gradients, attack beats "
            "noise, accuracy falls with eps and with steps, a huge eps gives ~0 accuracy). A "
            "FAIL means the curve above may overstate robustness.",
        )
    )
    warnings = [
        f"{label}: {w}" for label, c in results.curves.items() for w in c.get("warnings", [])
    ]
    if warnings:
        sec.add(Paragraph("Failed checks:"), Bullets(warnings))


def _inside(doc: Document, results: StudyResults) -> None:
    tools = [t for t in ("features", "interpolate", "targeted") if t in results.figures]
    if not tools:
        return
    sec = doc.section("Looking inside the models (Figures 3-5)")
    sec.add(
        Paragraph(
            "Every model gets the same seeds and source images, one block of rows per model. "
            "All three are PGD over the input with a large eps and a custom loss."
        )
    )
    for tool in tools:
        title, text = _FIGURE_TEXT[tool]
        sec.add(Figure(results.figures[tool], f"{title}. {text}"))


def _alignment(doc: Document, results: StudyResults) -> None:
    if not results.alignment:
        return
    cfg = results.config.alignment
    sec = doc.section("Perceptual alignment (Figure 5 as a number)")
    n = results.alignment[0].n
    sec.add(
        Paragraph(
            f"{n} test images that every judge classifies correctly, each with a random target "
            f"class other than its own (the same for every model), are perturbed toward the "
            f"target by targeted L2 PGD ({cfg.steps} steps) inside a ball of radius eps. The "
            "score is the share of perturbed images an independent judge assigns to the "
            "target; brackets hold the 95% bootstrap interval over images. 'model reached' "
            "is how often the model itself was fooled into the target."
        )
    )
    sec.add(
        Table(
            ["judge", "what it is", "clean test accuracy"],
            [[j.name, j.description, _pct(j.clean_accuracy)] for j in results.judges],
            "The judges. A pixel k-NN has no gradients for adversarial noise to transfer "
            "through; a trained network judge is partly fooled by the noise of a standard "
            "model, so its scores for standard models are high.",
        )
    )
    judge_order = [j.name for j in results.judges]
    columns = sorted(
        {(s.judge, s.eps) for s in results.alignment},
        key=lambda c: (judge_order.index(c[0]) if c[0] in judge_order else len(judge_order), -c[1]),
    )
    budgets = sorted({s.eps for s in results.alignment}, reverse=True)
    by = {(s.model, s.judge, s.eps): s for s in results.alignment}
    reached = {(s.model, s.eps): f"{s.model_reached}/{s.n}" for s in results.alignment}
    rows = []
    for model in dict.fromkeys(s.model for s in results.alignment):
        row = [model]
        for judge, eps in columns:
            s = by.get((model, judge, eps))
            row.append("-" if s is None else f"{_pct(s.score)} [{_pct(s.low)}-{_pct(s.high)}]")
        rows.append(row + [reached.get((model, eps), "-") for eps in budgets])
    headers = ["model", *(f"{judge}, eps {eps:g}" for judge, eps in columns)]
    headers += [f"model reached, eps {eps:g}" for eps in budgets]
    sec.add(
        Table(
            headers,
            rows,
            "Share of the perturbed images each judge assigns to the target [95% bootstrap "
            "interval], per judge and L2 budget; 'model reached': the model itself predicts "
            "the target.",
        )
    )
    if "alignment" in results.figures:
        sec.add(
            Figure(
                results.figures["alignment"],
                "Examples of the scored perturbations at each budget (first images of the "
                "scored set, same for every model).",
            )
        )


def _paper(doc: Document, results: StudyResults) -> None:
    cfg = results.config
    if not is_paper_setup(cfg.dataset, cfg.model):
        return
    sec = doc.section("The paper's own numbers (CIFAR-10, ResNet-50)")
    sec.add(
        Table(["", "Goodwin et al. (HPEC 2020)"], [[f.what, f.value] for f in CIFAR10_RESNET50])
    )
    fast = results.run(method="fast", steps=1)
    t = results.time_to_last_s(fast.label) if fast else None
    if fast is not None and t is not None and results.table_one:
        epochs = next(
            r["epochs"]
            for r, run in zip(results.table_one, results.runs)
            if run.label == fast.label
        )
        gpus = next(
            r["gpus"] for r, run in zip(results.table_one, results.runs) if run.label == fast.label
        )
        sec.add(
            Paragraph(
                f"This study: fast training took {_seconds(t)} for {epochs} epochs on {gpus} "
                f"process(es) (the paper: 2.9 h for 150 epochs on 2 V100s)."
            )
        )


def _files(doc: Document, results: StudyResults) -> None:
    sec = doc.section("Files")
    items = [
        f"`{r.label}`: run folder `{Path(r.run_dir).name}`, studied weights `{r.checkpoint}`"
        for r in results.runs
    ]
    items.append("`study.yaml`: the resolved study config; `state.json`: the stage cache")
    sec.add(
        Paragraph(
            "Everything lives in the study folder; each run folder is a normal "
            "fastrobust run (usable with `fastrobust eval`, `visualize`, `timing`)."
        ),
        Bullets(items),
    )


def build_report(results: StudyResults) -> Document:
    """The report as a :class:`Document` (rendered by :func:`write_report`)."""
    cfg = results.config
    methods = ", ".join(r.label for r in results.runs) or ", ".join(m.label for m in cfg.methods)
    doc = Document(
        f"Study: {cfg.title}",
        f"{cfg.model} on {cfg.dataset}, {cfg.norm} eps {cfg.eps:g}; methods: {methods}. "
        "A reproduction of Goodwin et al., 'Fast Training of Deep Neural Networks Robust to "
        "Adversarial Perturbations' (HPEC 2020), made by `fastrobust study`.",
    )
    for part in (_claims, _setup, _timing, _robustness, _inside, _alignment, _paper, _files):
        part(doc, results)
    return doc


def write_report(results: StudyResults) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into the study folder; returns both paths."""
    doc = build_report(results)
    md, page = results.folder / REPORT_MD, results.folder / REPORT_HTML
    doc.write(md, page)
    return md, page
