"""The paper's four claims, each checked against what the study measured.

Every line is computed from the study's own results (Table I, Figure 1 timings, robustness
curves, alignment scores) with its criterion stated next to it; a claim the study has no data
for says so instead of passing. Criteria are deliberately simple and printed, so a reader can
disagree with them.
"""

from __future__ import annotations

from fastrobust.study.document import Verdict
from fastrobust.study.paper import CLAIMS, PAPER_STEP_COST
from fastrobust.study.results import StudyResults

#: "about 3x faster": the 7-step / 1-step cost ratio must be at least this
MIN_SPEEDUP = 2.0
#: "comparable robustness": 1-step accuracy at the training eps at most this far below 7-step
COMPARABLE_MARGIN = 0.05
#: "far above standard": each robust model at least this much more accurate at the training eps
FAR_ABOVE_MARGIN = 0.10


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def speed_claim(results: StudyResults) -> Verdict:
    paper = (
        f"{CLAIMS['speed']} (per training step on V100s: fast ~{PAPER_STEP_COST['fast']}x, "
        f"7-step ~{PAPER_STEP_COST['pgd7']}x a standard step, a ratio of "
        f"~{PAPER_STEP_COST['pgd7'] / PAPER_STEP_COST['fast']:.1f}x)"
    )
    crit = f"7-step / 1-step cost of one training step >= {MIN_SPEEDUP:g}x"
    fast, pgd7 = results.run(method="fast", steps=1), results.run(method="pgd", steps=7)
    if fast is None or pgd7 is None:
        return Verdict(
            "Speed", paper, "no 1-step and 7-step pair of runs in this study", None, crit
        )
    parts, ratio = [], None
    step_fast, step_pgd = results.step_seconds.get("fast"), results.step_seconds.get("pgd7")
    if step_fast and step_pgd:
        ratio = step_pgd / step_fast
        std = results.step_seconds.get("standard")
        rel = (
            f" (fast {step_fast / std:.2f}x, 7-step {step_pgd / std:.2f}x a standard step)"
            if std
            else ""
        )
        parts.append(
            f"one training step at batch {results.timing_batch}: 7-step / fast = {ratio:.2f}x" + rel
        )
    t_fast, t_pgd = results.time_to_last_s(fast.label), results.time_to_last_s(pgd7.label)
    if t_fast and t_pgd:
        whole = t_pgd / t_fast
        parts.append(
            f"whole runs (Table I, validation included): {t_pgd:.1f} s / {t_fast:.1f} s = "
            f"{whole:.2f}x"
        )
        if ratio is None:
            ratio = whole
    if ratio is None:
        return Verdict("Speed", paper, "no timing was measured", None, crit)
    return Verdict("Speed", paper, "; ".join(parts), ratio >= MIN_SPEEDUP, crit)


def _robust_at_eps(results: StudyResults) -> tuple[str, dict[str, tuple[float, int]]]:
    eps = results.config.eps
    found = {}
    for key, (method, steps) in {
        "standard": ("standard", None),
        "fast": ("fast", 1),
        "pgd7": ("pgd", 7),
    }.items():
        run = results.run(method=method, steps=steps)
        value = results.accuracy_at(run.label, eps) if run else None
        if value is not None:
            found[key] = value
    return f"{results.config.norm} eps {eps:g}", found


def comparable_claim(results: StudyResults) -> Verdict:
    where, acc = _robust_at_eps(results)
    crit = (
        f"1-step accuracy at the training eps at most {100 * COMPARABLE_MARGIN:g} points "
        "below 7-step"
    )
    if "fast" not in acc or "pgd7" not in acc:
        return Verdict(
            "Comparable robustness", CLAIMS["robust_at_eps"], "no 1-step and 7-step curves", None
        )
    (fa, n), (pa, _) = acc["fast"], acc["pgd7"]
    measured = (
        f"adversarial accuracy at {where} ({n} test images): fast {_pct(fa)}, 7-step {_pct(pa)} "
        f"(difference {100 * (fa - pa):+.1f} points)"
    )
    return Verdict(
        "Comparable robustness",
        CLAIMS["robust_at_eps"],
        measured,
        fa >= pa - COMPARABLE_MARGIN,
        crit,
    )


def above_standard_claim(results: StudyResults) -> Verdict:
    where, acc = _robust_at_eps(results)
    crit = (
        f"each robust model at least {100 * FAR_ABOVE_MARGIN:g} points above standard at the "
        "training eps"
    )
    if "standard" not in acc or not ({"fast", "pgd7"} & set(acc)):
        return Verdict(
            "Far above standard", CLAIMS["above_standard"], "no standard and robust curves", None
        )
    std = acc["standard"][0]
    robust = {k: v[0] for k, v in acc.items() if k != "standard"}
    measured = f"adversarial accuracy at {where}: standard {_pct(std)}, " + ", ".join(
        f"{'7-step' if k == 'pgd7' else k} {_pct(v)}" for k, v in robust.items()
    )
    holds = all(v >= std + FAR_ABOVE_MARGIN for v in robust.values())
    return Verdict("Far above standard", CLAIMS["above_standard"], measured, holds, crit)


def alignment_claim(results: StudyResults) -> Verdict:
    crit = (
        "at every budget, each robust model's 95% interval lies above the standard model's "
        "(judge: the first listed)"
    )
    if not results.alignment or not results.judges:
        return Verdict("Perceptual alignment", CLAIMS["alignment"], "not scored", None, crit)
    judge = results.judges[0].name
    std = results.run(method="standard")
    robust = [r for r in (results.run(method="fast"), results.run(method="pgd")) if r]
    if std is None or not robust:
        return Verdict(
            "Perceptual alignment", CLAIMS["alignment"], "no standard and robust models", None
        )
    scores = {(s.model, s.eps): s for s in results.alignment if s.judge == judge}
    parts, holds = [], True
    for eps in results.config.alignment.budgets:
        base = scores.get((std.label, float(eps)))
        others = [scores.get((r.label, float(eps))) for r in robust]
        if base is None or None in others:
            continue
        text = ", ".join(
            f"{s.model} {_pct(s.score)} [{_pct(s.low)}-{_pct(s.high)}]" for s in [base, *others]
        )
        parts.append(f"eps {eps:g}: {text}")
        holds &= all(s.low > base.high for s in others)  # type: ignore[union-attr]
    if not parts:
        return Verdict("Perceptual alignment", CLAIMS["alignment"], "not scored", None, crit)
    measured = f"share judged 'the target' by {judge}: " + "; ".join(parts)
    return Verdict("Perceptual alignment", CLAIMS["alignment"], measured, holds, crit)


def check_claims(results: StudyResults) -> list[Verdict]:
    """The four claim lines, in the paper's order."""
    return [
        speed_claim(results),
        comparable_claim(results),
        above_standard_claim(results),
        alignment_claim(results),
    ]
