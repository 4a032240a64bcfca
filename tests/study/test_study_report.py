"""The study report: well-formed self-contained HTML, Markdown whose figures exist, and claim
lines computed from the numbers (change a number, the verdict changes)."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fastrobust.study.alignment import AlignmentScore
from fastrobust.study.claims import check_claims
from fastrobust.study.config import StudyConfig
from fastrobust.study.report import build_report, write_report
from fastrobust.study.results import JudgeSummary, RunSummary, StudyResults

VOID = {"meta", "img", "br", "hr", "link", "input"}


class HtmlChecker(HTMLParser):
    """Fails on a closing tag that does not match the open one; collects img sources."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs.get("href", ""))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _png(path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1.5), dpi=40)
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(path)
    return path


def _curve(acc: list[float], attacks=("pgd",)) -> dict:
    return {
        "eps": [0.0, 0.5, 1.0],
        "accuracy": acc,
        "clean_accuracy": acc[0],
        "n": 360,
        "subset": "all 360 test points",
        "attacks": list(attacks),
        "fooled_by": [{"clean": 5, "smaller_eps": 0, **{a: 1 for a in attacks}}] * 3,
        "checks": [
            {"name": "noise", "passed": True, "message": "ok"},
            {"name": "large_eps", "passed": True, "message": "ok"},
        ],
        "warnings": [],
    }


def _results(
    tmp_path: Path, *, fast_acc=0.30, pgd_acc=0.32, attacks=("pgd",), **cfg
) -> StudyResults:
    config = StudyConfig.from_dict(cfg)
    figs = {
        k: _png(tmp_path / f"{k}.png")
        for k in ("curves", "figure1", "features", "interpolate", "targeted", "alignment")
    }
    runs = [
        RunSummary("standard", "standard", 0, str(tmp_path / "runs/standard"), "best.pt"),
        RunSummary("fast", "fast", 1, str(tmp_path / "runs/fast"), "best.pt"),
        RunSummary("pgd-7", "pgd", 7, str(tmp_path / "runs/pgd-7"), "best.pt"),
    ]
    table = [
        {
            "run": r.label,
            "method": r.method,
            "gpus": 1,
            "batch_size": 128,
            "epochs": 30,
            "best_epoch": 30,
            "best_acc": 0.5,
            "best_by": "val_adv_acc",
            "hours_to_last": h,
            "hours_to_best": h,
            "rel_last": h / 0.01,
            "rel_best": h / 0.01,
        }
        for r, h in zip(runs, (0.01, 0.015, 0.04))
    ]

    def score(model, eps, hits):
        return AlignmentScore(
            model, "knn-5", eps, 100, hits, hits / 100 - 0.08, hits / 100 + 0.08, 100
        )

    return StudyResults(
        config=config,
        folder=tmp_path,
        setup=[("data", "digits"), ("hardware", "CPU <test> & co")],
        stage_times={"train": 61.0, "report": 0.5},
        runs=runs,
        table_one=table,
        curves={
            "standard": _curve([0.98, 0.4, 0.0], attacks),
            "fast": _curve([0.95, 0.7, fast_acc], attacks),
            "pgd-7": _curve([0.92, 0.66, pgd_acc], attacks),
        },
        curve_attack="l2 pgd, 20 steps x 10 restarts",
        step_seconds={"standard": 0.010, "fast": 0.017, "pgd7": 0.052},
        timing_batch=128,
        figures=figs,
        alignment=[score("standard", 1.5, 20), score("fast", 1.5, 40), score("pgd-7", 1.5, 45)],
        judges=[JudgeSummary("knn-5", "5-nearest neighbours on pixels", 0.986)],
    )


def test_html_is_well_formed_and_self_contained(tmp_path):
    results = _results(tmp_path, alignment={"budgets": [1.5]})
    md, page = write_report(results)
    checker = HtmlChecker()
    checker.feed(page.read_text())
    checker.close()
    assert checker.stack == [], checker.stack
    assert len(checker.images) == 6
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert all(link.startswith("#") for link in checker.links)  # nothing outside the file
    text = " ".join(checker.text)
    assert "CPU <test> & co" in text  # escaped in the HTML, read back as text
    assert "holds" in text and "paper says" in text


def test_markdown_figures_exist(tmp_path):
    results = _results(tmp_path, alignment={"budgets": [1.5]})
    md, _ = write_report(results)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md.read_text())
    assert len(links) == 6
    for link in links:
        assert (md.parent / link).is_file(), link


def test_claims_are_computed_from_the_numbers(tmp_path):
    good = {v.claim: v for v in check_claims(_results(tmp_path, alignment={"budgets": [1.5]}))}
    assert [v.holds for v in good.values()] == [True, True, True, True]
    assert "3.06x" in good["Speed"].measured  # 0.052 / 0.017
    bad = {
        v.claim: v
        for v in check_claims(
            _results(tmp_path, fast_acc=0.05, pgd_acc=0.30, alignment={"budgets": [1.5]})
        )
    }
    assert bad["Comparable robustness"].holds is False
    assert "fast 5.0%, pgd-7 30.0%" in bad["Comparable robustness"].measured
    assert bad["Far above standard"].holds is False


def test_claim_without_data_is_not_checked(tmp_path):
    results = _results(tmp_path, alignment={"budgets": [1.5]})
    results.runs = results.runs[:2]  # no 7-step run
    results.table_one = results.table_one[:2]
    verdicts = {v.claim: v for v in check_claims(results)}
    assert verdicts["Speed"].holds is None
    assert verdicts["Comparable robustness"].holds is None


@pytest.mark.parametrize("attacks", [("pgd",), ("pgd", "apgd-ce")])
def test_fooled_first_by_only_with_a_cascade(tmp_path, attacks):
    doc = build_report(_results(tmp_path, attacks=attacks, alignment={"budgets": [1.5]}))
    text = doc.to_markdown(tmp_path)
    assert ("fooled first by apgd-ce" in text) == (len(attacks) > 1)


def test_paper_numbers_only_for_the_papers_setup(tmp_path):
    digits = build_report(_results(tmp_path, alignment={"budgets": [1.5]})).to_markdown(tmp_path)
    assert "2.9 h" not in digits
    paper = build_report(
        _results(tmp_path, dataset="cifar10", model="resnet50", alignment={"budgets": [1.5]})
    ).to_markdown(tmp_path)
    assert "2.9 h for 150 epochs on 2 V100" in paper
    assert "could not be looked up" in paper
