"""Experiment trackers (issue 22): what TensorBoard and MLflow hold, read back through their
own readers, equals the run folder's metrics.jsonl; resume continues the same tracked run; a
missing extra or an unwritable store is one line before any work; a tracker failing mid-run
loses nothing of the run folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import tiny_config
from fastrobust.cli import main
from fastrobust.tracking import BACKENDS, TRACKERS_FILE, numeric_metrics
from fastrobust.training.trainer import fit, resume

pytestmark = pytest.mark.usefixtures("one_thread")


def _tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar in the event files of ``log_dir``, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    out: dict[str, dict[int, float]] = {}
    for tag in acc.Tags()["tensors"]:
        for event in acc.Tensors(tag):
            value = tensor_util.make_ndarray(event.tensor_proto)
            if value.dtype.kind == "f":
                out.setdefault(tag, {})[event.step] = float(value)
    return out


def _mlflow_metrics(uri: str, run_id: str, keys) -> dict[str, dict[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return {k: {m.step: m.value for m in client.get_metric_history(run_id, k)} for k in keys}


def _expected(run: Path) -> dict[str, dict[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        for key, value in numeric_metrics(row).items():
            out.setdefault(key, {})[row["epoch"]] = value
    return out


def _fit_and_resume(tmp_path: Path, loggers: list[str]) -> Path:
    """A 1-epoch digits run with ``loggers``, resumed to 2 epochs."""
    cfg = tiny_config(tmp_path, epochs=1, name="r", eval_every=1, schedule="constant")
    cfg.runtime.loggers = loggers
    cfg.evaluation.eval_limit, cfg.evaluation.eval_steps = 50, 2
    run = fit(cfg).run_dir
    before = json.loads((run / TRACKERS_FILE).read_text())
    resume(run, epochs=2)  # continues the same tracked runs
    assert json.loads((run / TRACKERS_FILE).read_text())["runs"] == before["runs"]
    return run


def test_tensorboard_and_csv_hold_metrics_jsonl_exactly_and_resume_continues(tmp_path):
    pytest.importorskip("tensorboard")
    run = _fit_and_resume(tmp_path, ["tensorboard", "csv"])
    expected = _expected(run)
    assert sorted(expected["train_loss"]) == [1, 2] and "val_adv_acc" in expected
    scalars = _tensorboard_scalars(run / "tensorboard")
    assert {k: scalars[k] for k in expected} == expected
    summary = json.loads((run / "summary.json").read_text())
    assert scalars["summary/test_adv_acc"][2] == summary["test_adv_acc"]  # at the last epoch
    assert _csv_metrics(run / "csv" / "metrics.csv") == expected


@pytest.mark.slow  # MLflow creating its SQLite store alone takes 13 s here (alembic migrations)
def test_mlflow_run_holds_metrics_jsonl_exactly_and_resume_continues(tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    run = _fit_and_resume(tmp_path, ["mlflow"])
    state = json.loads((run / TRACKERS_FILE).read_text())["runs"]["mlflow"]
    run_id, uri = state["run_id"], state["tracking_uri"]
    assert uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    expected = _expected(run)
    assert sorted(expected["train_loss"]) == [1, 2] and "val_adv_acc" in expected
    assert _mlflow_metrics(uri, run_id, expected) == expected
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "fastrobust"]
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # one tracked run, not one per resume
    recorded = runs[0].data
    assert recorded.params["attack.method"] == "fast" and recorded.params["optimisation.epochs"]
    summary = json.loads((run / "summary.json").read_text())
    assert recorded.metrics["summary/test_adv_acc"] == summary["test_adv_acc"]
    assert runs[0].info.status == "FINISHED"


def _csv_metrics(path: Path) -> dict[str, dict[int, float]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "step,metric,value"
    logged: dict[str, dict[int, float]] = {}
    for line in lines[1:]:
        step, key, value = line.split(",")
        assert int(step) not in logged.get(key, {})  # each step once, also after the resume
        logged.setdefault(key, {})[int(step)] = float(value)
    return logged


def test_a_missing_extra_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    from fastrobust.tracking import core

    monkeypatch.setitem(
        core.BACKENDS, "wandb", core.Backend("wandb", ("no_such_module_fr22",), "wandb")
    )
    code = main(["train", "--out-dir", str(tmp_path / "runs"), "--logger", "csv,wandb"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        "fastrobust: error: --logger wandb needs the no_such_module_fr22 package: pip install "
        "'fastrobust[wandb]'"
    ]
    assert not (tmp_path / "runs").exists()


def test_an_unwritable_mlflow_store_is_one_line_before_any_work(tmp_path, capsys):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    (tmp_path / "file").write_text("a file where the store's folder should be")
    argv = ["train", "--out-dir", str(tmp_path / "runs"), "--logger", "mlflow"]
    code = main([*argv, "--tracking-uri", f"sqlite:///{tmp_path}/file/m.db"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "the MLflow store's folder" in err and "is an existing file" in err
    assert not (tmp_path / "runs").exists()


def test_a_tracker_failing_mid_run_loses_nothing(tmp_path, monkeypatch, caplog):
    from fastrobust.tracking.backends import CsvTracker

    calls = []

    def broken(self, metrics, step):
        calls.append(step)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CsvTracker, "log_metrics", broken)
    cfg = tiny_config(tmp_path, epochs=2, name="r", loggers=["csv"], eval_limit=50, eval_steps=2)
    with caplog.at_level(logging.WARNING, logger="fastrobust"):
        result = fit(cfg)
    assert calls == [1]  # dropped after its first failure
    assert len((result.run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert (result.run_dir / "summary.json").is_file() and (result.run_dir / "best.pt").is_file()
    assert "the csv logger failed to log step 1" in caplog.text


def test_numeric_metrics_flattens_and_keeps_only_numbers():
    row = {"a": 1, "b": True, "c": "text", "d": {"e": 0.5, "f": None}, "g": float("nan")}
    assert numeric_metrics(row) == {"a": 1.0, "b": 1.0, "d/e": 0.5}
    assert numeric_metrics({"x=y (z)": 2}) == {"x_y _z_": 2.0}


def test_help_lists_every_logger_and_its_extra(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, backend in BACKENDS.items():
        assert name in text
        if backend.extra:
            assert f"fastrobust[{backend.extra}]" in text


@pytest.mark.slow  # W&B starts a service process per run (seconds)
def test_wandb_offline_run_is_continued_on_resume(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = _fit_and_resume(tmp_path, ["wandb"])
    run_id = json.loads((run / TRACKERS_FILE).read_text())["runs"]["wandb"]["id"]
    offline = sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 2  # the first leg and the resumed one, under the same run id
    assert all(list(folder.glob(f"run-{run_id}.wandb")) for folder in offline)
