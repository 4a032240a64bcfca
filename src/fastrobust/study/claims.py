"""The paper's four claims, each checked against what the study measured.

Every line is computed from the study's own results (Table I, Figure 1 timings, robustness
curves, alignment scores) with its criterion stated next to it; a claim the study has no data
for says so instead of passing. Criteria are deliberately simple and printed, so a reader can
disagree with them.
"""

from __future__ import annotations

from fastrobust.study.document import Verdict
from fastrobust.study.paper import CLAIMS, PAPER_STEP_COST
from fastrobust.study.results import RunSummary, StudyResults

#: "about 3x faster": the 7-step / 1-step cost ratio must be at least this
MIN_SPEEDUP = 2.0
#: "comparable robustness": 1-step accuracy at the training eps at most this far below 7-step
COMPARABLE_MARGIN = 0.05
#: "far above standard": each robust model at least this much more accurate at the training eps
FAR_ABOVE_MARGIN = 0.10


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _multi_step(results: StudyResults) -> RunSummary | None:
    """The K-step PGD run to compare against: 7 steps as in the paper, else any K > 1."""
    seven = results.run(method="pgd", steps=7)
    if seven is not None:
        return seven
    return next((r for r in results.runs if r.method == "pgd" and r.attack_steps > 1), None)


def speed_claim(results: StudyResults) -> Verdict:
    paper = (
        f"{CLAIMS['speed']} (per training step on V100s: fast ~{PAPER_STEP_COST['fast']}x, "
        f"7-step ~{PAPER_STEP_COST['pgd7']}x a standard step, a ratio of "
        f"~{PAPER_STEP_COST['pgd7'] / PAPER_STEP_COST['fast']:.1f}x)"
    )
    crit = f"K-step / 1-step cost of one training step >= {MIN_SPEEDUP:g}x (K = 7 in the paper)"
    fast, pgd7 = results.run(method="fast", steps=1), _multi_step(results)
    if fast is None or pgd7 is None:
        return Verdict("Speed", paper, "no 1-step and K-step pair of runs", None, crit)
    parts, ratio = [], None
    k = pgd7.attack_steps
    step_fast, step_pgd = results.step_seconds.get("fast"), results.step_seconds.get(f"pgd{k}")
    if step_fast and step_pgd:
        ratio = step_pgd / step_fast
        std = results.step_seconds.get("standard")
        rel = (
            f" (fast {step_fast / std:.2f}x, {k}-step {step_pgd / std:.2f}x a standard step)"
            if std
            else ""
        )
        parts.append(
            f"one training step at batch {results.timing_batch}: {k}-step / fast = {ratio:.2f}x"
            + rel
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


def _robust_at_eps(results: StudyResults) -> tuple[str, dict[str, tuple[str, float, int]]]:
    """Accuracy at the training eps of the standard, 1-step and K-step runs: role -> (label,
    accuracy, n)."""
    eps = results.config.eps
    found = {}
    roles = {
        "standard": results.run(method="standard"),
        "fast": results.run(method="fast", steps=1),
        "multi": _multi_step(results),
    }
    for role, run in roles.items():
        value = results.accuracy_at(run.label, eps) if run else None
        if run is not None and value is not None:
            found[role] = (run.label, *value)
    return f"{results.config.norm} eps {eps:g}", found


def comparable_claim(results: StudyResults) -> Verdict:
    where, acc = _robust_at_eps(results)
    crit = (
        f"1-step accuracy at the training eps at most {100 * COMPARABLE_MARGIN:g} points "
        "below K-step"
    )
    if "fast" not in acc or "multi" not in acc:
        return Verdict(
            "Comparable robustness", CLAIMS["robust_at_eps"], "no 1-step and K-step curves", None
        )
    (fl, fa, n), (pl, pa, _) = acc["fast"], acc["multi"]
    measured = (
        f"adversarial accuracy at {where} ({n} test images): {fl} {_pct(fa)}, {pl} {_pct(pa)} "
        f"(difference {100 * (fa - pa):+.1f} points)"
    )
    half = results.config.eps / 2
    fh, ph = results.accuracy_at(fl, half), results.accuracy_at(pl, half)
    if fh is not None and ph is not None:
        measured += f"; at eps {half:g}: {fl} {_pct(fh[0])}, {pl} {_pct(ph[0])}"
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
    if "standard" not in acc or not ({"fast", "multi"} & set(acc)):
        return Verdict(
            "Far above standard", CLAIMS["above_standard"], "no standard and robust curves", None
        )
    std_label, std, _ = acc["standard"]
    robust = {label: value for role, (label, value, _) in acc.items() if role != "standard"}
    measured = f"adversarial accuracy at {where}: {std_label} {_pct(std)}, " + ", ".join(
        f"{label} {_pct(v)}" for label, v in robust.items()
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
    robust = [r for r in (results.run(method="fast", steps=1), _multi_step(results)) if r]
    if std is None or not robust:
        return Verdict(
            "Perceptual alignment", CLAIMS["alignment"], "no standard and robust models", None
        )
    scores = {(s.model, s.eps): s for s in results.alignment if s.judge == judge}
    parts, holds = [], True
    for eps in results.config.alignment.budgets:
        base = scores.get((std.label, float(eps)))
        found = [scores.get((r.label, float(eps))) for r in robust]
        others = [s for s in found if s is not None]
        if base is None or len(others) < len(found):
            continue
        text = ", ".join(
            f"{s.model} {_pct(s.score)} [{_pct(s.low)}-{_pct(s.high)}]" for s in [base, *others]
        )
        parts.append(f"eps {eps:g}: {text}")
        holds &= all(s.low > base.high for s in others)
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
