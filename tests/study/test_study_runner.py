"""A tiny study end to end: every stage runs, a rerun skips all of them, deleting one run
folder redoes only what was made from it, and bad input is one line with nothing lost."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from test_study_report import HtmlChecker

from fastrobust.cli import main
from fastrobust.errors import CheckpointError, ConfigError
from fastrobust.study.config import StudyConfig
from fastrobust.study.runner import run_study

TINY = {
    "title": "tiny",
    "methods": ["standard", "fast", "pgd-2"],
    "training": {
        "epochs": 2,
        "eval_every": 2,
        "eval_limit": 60,
        "eval_steps": 2,
        "overfit_check_size": 32,
    },
    "evaluation": {"eps": [0, 1], "steps": 2, "restarts": 1, "limit": 60},
    "figures": {"tools": ["features", "interpolate", "targeted"], "steps": 5, "targets": 3,
                "nodes": 2, "pairs": 1},
    "alignment": {"budgets": [1.5], "images": 20, "steps": 5, "bootstrap": 50,
                  "judges": ["knn"]},
    "timing": {"batch_sizes": [16, 32], "steps": [1], "repeats": 1, "warmup": 0, "gpus": [1]},
    "stages": ["train", "curves", "table1", "figure1", "figures", "alignment", "report"],
}  # fmt: skip


def tiny(**changes) -> StudyConfig:
    return StudyConfig.from_dict({**TINY, **changes})


@pytest.fixture(scope="module")
def study(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("study") / "s"
    results = run_study(tiny(), out)
    return out, results


def test_every_stage_ran_and_the_report_explains_it(study):
    out, results = study
    assert "train/fast" in results.ran and "report" in results.ran
    for name in ("report.md", "report.html", "study.yaml", "state.json"):
        assert (out / name).is_file()
    for label in ("standard", "fast", "pgd-2"):
        assert (out / "runs" / label / "best.pt").is_file()  # a normal run folder
        assert (out / "curves" / f"{label}.json").is_file()
    md = (out / "report.md").read_text()
    for heading in ("claims, checked", "Table I", "Figure 2", "Perceptual alignment"):
        assert heading in md
    assert set(results.curves) == {"standard", "fast", "pgd-2"}
    assert {s.model for s in results.alignment} == {"standard", "fast", "pgd-2"}
    assert results.judges[0].name == "knn-5" and results.judges[0].clean_accuracy > 0.9
    assert set(results.step_seconds) == {"standard", "fast", "pgd2"}
    assert {"features", "interpolate", "targeted", "curves", "figure1"} <= set(results.figures)


def test_html_is_well_formed_and_holds_every_figure(study):
    out, results = study
    checker = HtmlChecker()
    checker.feed((out / "report.html").read_text())
    checker.close()
    assert checker.stack == []
    assert len(checker.images) == len(results.figures)  # every figure embedded, none missing
    assert all(src.startswith("data:image/png;base64,") for src in checker.images)
    md = (out / "report.md").read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link


def test_rerun_skips_every_stage(study):
    out, _ = study
    before = (out / "state.json").read_text()
    again = run_study(tiny(), out)
    assert again.ran == []
    assert (out / "state.json").read_text() == before


def test_deleting_a_run_redoes_only_what_depends_on_it(study):
    out, _ = study
    shutil.rmtree(out / "runs" / "fast")
    again = run_study(tiny(), out)
    assert "train/fast" in again.ran and "curves/fast" in again.ran
    assert "alignment/fast" in again.ran and "table1" in again.ran
    assert "figures/targeted" in again.ran  # every model side by side: redrawn
    for other in ("standard", "pgd-2"):
        assert f"train/{other}" not in again.ran
        assert f"curves/{other}" not in again.ran
        assert f"alignment/{other}" not in again.ran


def test_a_changed_setting_reruns_only_its_stage(study):
    out, _ = study
    changed = tiny(evaluation={**TINY["evaluation"], "restarts": 2})
    again = run_study(changed, out)
    assert {p for p in again.ran if p.startswith("curves/")} == {
        "curves/standard", "curves/fast", "curves/pgd-2", "curves/plot"
    }  # fmt: skip
    assert not [p for p in again.ran if p.startswith(("train/", "alignment/"))]


def test_only_reruns_one_stage(study):
    out, _ = study
    again = run_study(tiny(), out, only="table1")
    assert again.ran[0] == "table1" and set(again.ran) <= {"table1", "report"}


def test_a_stage_without_its_inputs_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="run the train stage first"):
        run_study(tiny(), tmp_path / "empty", only="curves")


def test_retrained_settings_never_overwrite_a_run(study):
    out, _ = study
    other = tiny(training={**TINY["training"], "lr": 0.05})
    with pytest.raises(ConfigError, match="other settings"):
        run_study(other, out)
    assert json.loads((out / "runs" / "fast" / "summary.json").read_text())["epochs_done"] == 2


def test_an_interrupted_run_needs_resume(study, tmp_path):
    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    summary = copy / "runs" / "pgd-2" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "interrupted": True}))
    state = json.loads((copy / "state.json").read_text())
    del state["done"]["train/pgd-2"]
    (copy / "state.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="pass --resume"):
        run_study(tiny(), copy)
    again = run_study(tiny(), copy, resume=True)
    assert "train/pgd-2" in again.ran


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [standard, magic]\n")
    assert main(["study", "--config", str(bad), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown method 'magic'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()  # nothing written
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--only", "paint"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("dataset: cifar10\n")
    code = main(["study", "--config", str(good), "--data-dir", str(tmp_path / "no"),
                 "--out", str(tmp_path / "s")])  # fmt: skip
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_cli_refuses_a_folder_that_is_not_a_study(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["study", "--out", str(tmp_path)]) == 2
    assert "holds no study" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_bundled_default_matches_the_documented_config():
    default = StudyConfig()
    documented = StudyConfig.from_yaml(Path(__file__).parents[2] / "configs/study_digits.yaml")
    assert default.to_dict() == documented.to_dict()


def _study_worker(out: str) -> None:
    config = tiny(
        methods=["standard", "fast"],
        training={**TINY["training"], "device": "cpu"},
        stages=["train", "curves", "table1", "report"],
    )
    run_study(config, out)


@pytest.mark.slow
def test_under_two_processes_training_and_curves_use_both(tmp_path):
    from fastrobust import distributed

    out = tmp_path / "ddp"
    distributed.launch_local(_study_worker, 2, str(out), threads=1)
    curve = json.loads((out / "curves" / "fast.json").read_text())
    assert (
        curve["n"]
        == TINY["evaluation"]["limit"]
        == sum(s["stop"] - s["start"] for s in curve["shards"])
    )
    assert len(curve["shards"]) == 2 and "class-stratified sample" in curve["subset"]
    table = json.loads((out / "timing" / "table1.json").read_text())
    assert [row["gpus"] for row in table] == [2, 2]
    assert (out / "report.html").is_file()


def test_a_report_of_nothing_says_what_is_missing(tmp_path):
    config = tiny(stages=["report"])
    results = run_study(config, tmp_path / "s", device="cpu")
    assert config.training["device"] == "cpu"  # the runs would train there too
    md = (tmp_path / "s" / "report.md").read_text()
    assert "not checked" in md and "did not run" in md
    assert results.ran == ["report"]
