"""``eval`` and ``study`` log to the trackers too (issue 22): the numbers the trackers hold,
read back through TensorBoard's reader and the CSV file, are the ones the report wrote."""

from __future__ import annotations

import json

import pytest
from test_trackers import _csv_metrics, _tensorboard_scalars

from fastrobust.cli import main
from fastrobust.tracking import TrackingSettings

pytestmark = pytest.mark.usefixtures("one_thread")


def test_eval_logs_each_eps_attack_and_check_verdict(one_epoch_run, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    out = tmp_path / "ev"
    argv = ["eval", str(one_epoch_run), "--limit", "40", "--steps", "2", "--restarts", "1"]
    code = main([*argv, "--out", str(out), "--logger", "tensorboard", "--logger", "csv"])
    assert code == 0, capsys.readouterr().err
    (curve,) = json.loads((out / "robustness.json").read_text())["models"].values()
    expected = {"fast/clean_acc": curve["clean_accuracy"]}
    for eps, acc, fooled in zip(curve["eps"], curve["accuracy"], curve["fooled_by"]):
        expected[f"fast/robust_acc/eps_{eps:g}"] = acc
        expected |= {f"fast/fooled_by/eps_{eps:g}/{k}": float(v) for k, v in fooled.items()}
    expected |= {f"fast/check/{c['name']}": float(c["passed"]) for c in curve["checks"]}
    assert curve["checks"]  # the verdicts are there to compare
    scalars = _tensorboard_scalars(out / "tensorboard")
    assert {k: scalars[k][0] for k in expected} == expected
    logged = _csv_metrics(out / "csv" / "metrics.csv")
    assert {k: logged[k][0] for k in expected} == expected
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert acc.Tags()["images"] == ["robustness"]  # the plot, as an image


def test_eval_with_a_missing_extra_is_one_line_before_any_work(
    one_epoch_run, tmp_path, capsys, monkeypatch
):
    from fastrobust.tracking import core

    monkeypatch.setitem(core.BACKENDS, "csv", core.Backend("csv", ("no_such_module_fr22",), "x"))
    code = main(["eval", str(one_epoch_run), "--out", str(tmp_path / "e"), "--logger", "csv"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "fastrobust: error: --logger csv needs the no_such_module_fr22 package: pip install "
        "'fastrobust[x]'"
    ]
    assert not (tmp_path / "e").exists()


def test_the_study_logs_its_curves_figures_and_claims(tmp_path):
    pytest.importorskip("tensorboard")
    from fastrobust.study.config import StudyConfig
    from fastrobust.study.results import StudyResults
    from fastrobust.study.stages import train_key
    from fastrobust.study.tracked import pass_to_runs, track_study

    config = StudyConfig.from_dict({"methods": ["standard", "fast"], "training": {"epochs": 2}})
    spec = config.methods[0]
    before = train_key(config.train_config(spec, out_dir=tmp_path))
    tracking = TrackingSettings(loggers=["csv", "tensorboard"])
    pass_to_runs(config, tracking, tmp_path)
    cfg = config.train_config(spec, out_dir=tmp_path)
    assert cfg.runtime.loggers == ["csv", "tensorboard"]
    assert train_key(cfg) == before  # logging changes no cached result
    curve = {"eps": [0.0, 1.0], "accuracy": [0.9, 0.25], "clean_accuracy": 0.9}
    results = StudyResults(config=config, folder=tmp_path, curves={"fast": curve})
    track_study(results, tracking, tmp_path)
    logged = _csv_metrics(tmp_path / "csv" / "metrics.csv")
    assert logged["curves/fast/robust_acc/eps_1"] == {0: 0.25}
    assert logged["curves/fast/clean_acc"] == {0: 0.9}
    assert _tensorboard_scalars(tmp_path / "tensorboard")["curves/fast/robust_acc/eps_0"] == {
        0: 0.9
    }
    claims = json.loads((tmp_path / "csv" / "summary.json").read_text())["claims"]
    assert [c["claim"] for c in claims][0] and all("mark" in c for c in claims)
