"""``fastrobust bench``: a tiny protocol (2 methods x 2 seeds, 1 epoch, a small AutoAttack
cascade) trains, evaluates and reports through the CLI, a rerun comes from the cache, the
bundled digits default equals configs/bench_digits.yaml, and a bad protocol is one line with
exit status 2 before any work."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from fastrobust.cli import main
from fastrobust.study.bench import BenchConfig, digits_protocol
from fastrobust.study.bench_report import pareto_front
from fastrobust.training.methods import method_names

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

TINY = {
    "title": "tiny bench",
    "methods": ["fast", "pgd-2"],
    "seeds": [0, 1],
    "threats": [{"norm": "l2", "eps": 1.0}],
    "training": {"epochs": 1, "eval_limit": 20, "eval_steps": 1, "overfit_check_size": 0},
    "autoattack": {"attacks": ["apgd-ce"], "steps": 3, "restarts": 1, "limit": 20},
    "pgd_curve": {"eps": [0, 1.0], "steps": 2, "restarts": 1, "limit": 20},
}


def test_tiny_bench_trains_evaluates_and_reports(tmp_path, capsys):
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump(TINY))
    argv = ["bench", "--config", str(protocol), "--out", str(tmp_path / "b"), "--no-progress"]
    assert main([*argv, "--logger", "csv"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "collapse: a seed collapsed when its AutoAttack accuracy is below 0.5 x" in out
    b = tmp_path / "b"
    rows = list(csv.DictReader((b / "bench.csv").open()))
    assert [r["method"] for r in rows] == ["fast", "pgd-2"]
    assert float(rows[0]["cost_vs_baseline"]) == pytest.approx(1.0)
    per_run = list(csv.DictReader((b / "runs.csv").open()))
    assert len(per_run) == 4 and {r["seed"] for r in per_run} == {"0", "1"}
    for r in rows:  # mean and min-max over the seeds of runs.csv
        aa = [float(x["autoattack"]) for x in per_run if x["method"] == r["method"]]
        assert float(r["aa_min"]) == min(aa) and float(r["aa_max"]) == max(aa)
        assert float(r["aa_mean"]) == pytest.approx(sum(aa) / 2)
    for x in per_run:  # the AutoAttack accuracy comes from the curve files eval writes
        doc = json.loads((b / "l2-1" / f"seed-{x['seed']}" / "curves" / f"{x['method']}.json")
                         .read_text())  # fmt: skip
        assert doc["eps"] == [0, 1.0] and doc["attacks"] == ["apgd-ce"]
        assert float(x["autoattack"]) == doc["accuracy"][1] <= float(x["clean"])
    md = (b / "bench.md").read_text()
    assert "| fast |" in md and "cost vs fast" in md and "collapsed seeds" in md
    assert (b / "pareto.png").stat().st_size > 0 and "base64" in (b / "bench.html").read_text()
    tracked = sorted(b.glob("l2-1/seed-*/runs/*/csv/metrics.csv"))
    assert len(tracked) == 4  # every run logged live to its tracker (--logger csv)
    for path in tracked:
        logged = [r for r in csv.DictReader(path.open()) if r["metric"] == "train_loss"]
        rows_of_run = (path.parents[1] / "metrics.jsonl").read_text().splitlines()
        assert [float(r["value"]) for r in logged] == [
            json.loads(line)["train_loss"] for line in rows_of_run
        ]
    assert main(argv) == 0  # everything cached (the loggers are not part of it): nothing retrains
    state = json.loads((b / "l2-1" / "seed-0" / "state.json").read_text())
    assert set(state["done"]) >= {"train/fast", "train/pgd-2", "curves/fast"}


@pytest.mark.slow  # two tiny benches: ~15 s idle
def test_bench_evaluates_the_raw_weights_when_asked_and_retrains_nothing(tmp_path, capsys):
    """``autoattack.weights``: raw evaluates the trained weights of a run that kept an
    average, auto the average; switching reruns the evaluations only."""
    protocol = tmp_path / "p.yaml"
    tiny = {**TINY, "methods": ["fast"], "seeds": [0]}
    tiny["training"] = {**TINY["training"], "weight_average": 0.5}
    b = tmp_path / "b"
    argv = ["bench", "--config", str(protocol), "--out", str(b), "--no-progress"]
    report = b / "l2-1" / "seed-0" / "curves" / "robustness.json"
    trained = b / "l2-1" / "seed-0" / "runs" / "fast" / "last.pt"
    seen = {}
    for weights in ("raw", "auto"):
        protocol.write_text(yaml.safe_dump({**tiny, "autoattack": {**TINY["autoattack"],
                                                                 "weights": weights}}))  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        seen[weights] = (json.loads(report.read_text()), trained.stat().st_mtime_ns)
        said = {"raw": "the trained weights (not", "auto": "the weight average where"}[weights]
        assert said in (b / "bench.md").read_text()
    doc_raw, doc_auto = seen["raw"][0], seen["auto"][0]
    assert [m["trained"]["weights"] for m in doc_raw["models"].values()] == ["raw"]
    assert [m["trained"]["weights"] for m in doc_auto["models"].values()] == ["ema"]
    assert seen["raw"][1] == seen["auto"][1]  # the run was not trained again


def test_a_diverged_run_is_recorded_and_the_bench_goes_on(tmp_path, capsys):
    """A seed whose loss becomes NaN is a result, not the end of the benchmark: recorded in
    diverged.json, its last good weights evaluated, marked in the table; a rerun keeps it."""
    tiny = {**TINY, "seeds": [0], "methods": ["fast", {"label": "boom", "method": "standard",
                                                       "lr": 1.0e12}]}  # fmt: skip
    tiny["training"] = {**TINY["training"], "epochs": 2}
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump(tiny))
    b = tmp_path / "b"
    argv = ["bench", "--config", str(protocol), "--out", str(b), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    record = b / "l2-1" / "seed-0" / "runs" / "boom" / "diverged.json"
    doc = json.loads(record.read_text())
    assert "loss became nan" in doc["message"] or "loss became inf" in doc["message"]
    assert doc["epochs_done"] < 2
    per_run = {r["method"]: r for r in csv.DictReader((b / "runs.csv").open())}
    assert per_run["boom"]["collapsed"] == "True" and per_run["fast"]["collapsed"] == "False"
    assert "1/1 (seed 0 diverged)" in (b / "bench.md").read_text()
    assert (b / "l2-1" / "seed-0" / "curves" / "boom.json").is_file()  # last good weights
    written = record.stat().st_mtime_ns
    assert main(argv) == 0  # cached: the diverged run is not trained again
    assert record.stat().st_mtime_ns == written


def test_digits_default_is_the_bundled_file_and_every_method():
    written = yaml.safe_load((CONFIGS / "bench_digits.yaml").read_text())
    assert written == digits_protocol()
    config = BenchConfig.from_dict(digits_protocol())
    labels = [m.label for m in config.methods]
    assert labels == [m for m in method_names() if m not in ("zerograd", "liet")]  # no L2 form
    assert config.seeds == [0, 1, 2]


@pytest.mark.parametrize("name", ["bench_cifar10_fastat.yaml", "bench_cifar10_fastat_l2.yaml"])
def test_shipped_cifar_protocols_parse(name):
    data = yaml.safe_load((CONFIGS / name).read_text())
    data.pop("data_dir", None)  # the CIFAR folder is not here
    config = BenchConfig.from_dict(data)
    assert config.seeds == [0, 1, 2] and config.training["weight_average"] == 0.9995


@pytest.mark.parametrize(
    "change,message",
    [
        ({"seeds": [0, 0]}, "seeds must be a list of distinct integers"),
        ({"methods": ["nope"]}, "unknown method 'nope'"),
        ({"threats": [{"norm": "l3", "eps": 1}]}, "unknown norm 'l3'"),
        ({"threats": [{"norm": "linf"}]}, "threats[0] must be a mapping of norm and eps"),
        ({"training": {"seed": 3}}, "training.seed is set by the benchmark"),
        ({"colapse_ratio": 0.5}, "unknown key 'colapse_ratio'"),
        ({"collapse_ratio": 2}, "collapse_ratio must be in [0, 1], got 2"),
        # a section's key is named as the file names it, not as a flag (was "--limit")
        ({"autoattack": {"limit": -5}}, "bench protocol: autoattack.limit must be >= 1"),
        ({"pgd_curve": {"steps": 0}}, "bench protocol: pgd_curve.steps must be >= 1"),
    ],
)
def test_bad_protocol_is_one_line_exit_2(change, message, tmp_path, capsys):
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump(TINY | change))
    assert main(["bench", "--config", str(protocol), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "b").exists()


def test_pareto_front_keeps_the_undominated_points():
    points = [(1.0, 40.0), (2.0, 45.0), (1.5, 38.0), (3.0, 44.0), (0.5, 10.0)]
    assert pareto_front(points) == [4, 0, 1]


@pytest.mark.slow  # ~10-35 s: in the slow run
def test_bench_certifies_every_model_and_reports_mean_and_range_over_seeds(tmp_path, capsys):
    """With a ``certify`` section every L2 model is certified by randomized smoothing (the
    study's certified curves) and bench.md holds, per method and radius, the mean and min-max
    over seeds of the certified accuracies the seed folders' certified.json hold."""
    protocol = tmp_path / "p.yaml"
    tiny = {**TINY, "methods": ["fast"], "pgd_curve": {"eps": [0], "steps": 1, "limit": 10}}
    tiny["autoattack"] = {"attacks": ["apgd-ce"], "steps": 1, "restarts": 1, "limit": 10}
    tiny["certify"] = {"sigma": 0.25, "n0": 8, "n": 40, "batch_size": 40, "limit": 10,
                       "radii": "0,0.1", "checks": False}  # fmt: skip
    protocol.write_text(yaml.safe_dump(tiny))
    argv = ["bench", "--config", str(protocol), "--out", str(tmp_path / "b"), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    b = tmp_path / "b"
    docs = [json.loads((b / "l2-1" / f"seed-{s}" / "curves" / "certified.json").read_text())
            for s in (0, 1)]  # fmt: skip
    accs = [100 * d["models"]["fast"]["certified_accuracy"][0] for d in docs]
    md = (b / "bench.md").read_text()
    assert "certified L2 accuracy" in md and "sigma 0.25" in md
    want = f"| fast | {sum(accs) / 2:.1f} ({min(accs):.1f}-{max(accs):.1f}) |"
    assert want in md, md
