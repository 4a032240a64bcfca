"""``fastrobust timing``: Table I from runs, measuring, one-line user errors."""

from __future__ import annotations

import csv

import pytest

from fastrobust.cli import main
from run_folders import fake_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_prints_table_one_from_runs(tmp_path, capsys):
    a = fake_run(tmp_path, "pgd", "pgd", [3600, 7200], [0.3, 0.5])
    b = fake_run(tmp_path, "fast", "fast", [900, 1800], [0.4, 0.4])
    out = tmp_path / "t"
    args = ["-q", "timing", "--runs", str(a), str(b), "--baseline", "fast", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Table I" in text and "relative to fast" in text
    assert not (out / "measured.csv").exists()  # a table only: nothing measured
    rows = list(csv.DictReader(open(out / "table1.csv")))
    assert [r["run"] for r in rows] == ["pgd", "fast"]
    assert float(rows[0]["rel_last"]) == pytest.approx(4.0)


def test_cli_measures_estimates_and_overlays_runs(tmp_path, capsys):
    run = fake_run(tmp_path, "fast", "fast", [10.0, 20.0], [0.4, 0.5], world_size=2, batch_size=4)
    out = tmp_path / "t"
    args = ["-q", "timing", "--runs", str(run), "--measure", "--batch-sizes", "2,4"]
    args += ["--steps", "1", "--repeats", "1", "--warmup", "0", "--gpus", "1,2,3"]
    args += ["--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "seconds per call" in text and "lower bound" in text and "[3] do not divide" in text
    for name in ("measured.csv", "estimate_batch.csv", "estimate_gpus.csv", "table1.csv"):
        assert (out / name).is_file(), name
    assert (out / "timing.png").read_bytes()[:4] == b"\x89PNG"
    gpus = list(csv.DictReader(open(out / "estimate_gpus.csv")))
    assert {(r["method"], r["gpus"], r["global_batch"]) for r in gpus} == {
        (m, g, "4") for m in ("standard", "fast") for g in ("1", "2")
    }  # the run's global batch and digits' size were the defaults
    batch = list(csv.DictReader(open(out / "estimate_batch.csv")))
    assert {r["gpus"] for r in batch} == {"2"}  # the run's process count


def test_cli_bad_flag_is_a_one_line_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["timing", "--out", str(tmp_path), "--batch-sizes", "a,b"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-sizes: invalid list value: 'a,b'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--runs", "/nonexistent/run"], "does not exist"),
        (["--baseline", "other"], "--baseline 'other' is none of the runs"),
        (["--repeats", "0", "--measure"], "--repeats must be >= 1, got 0"),
        (["--batch-sizes", "8,0", "--measure"], "--batch-sizes must be >= 1, got 0"),
    ],
)
def test_cli_user_errors_are_one_line(extra, message, capsys, tmp_path):
    run = fake_run(tmp_path, "fast", "fast", [10.0], [0.4])
    args = [
        "timing",
        "--out",
        str(tmp_path / "t"),
        *(["--runs", str(run)] if extra[0] != "--runs" else []),
        *extra,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_library_errors_name_the_settings_field(tmp_path):
    """The same mistakes from Python name the field (``timing.repeats``), not the flag."""
    from fastrobust.errors import ConfigError
    from fastrobust.timing.runs_table import read_run
    from fastrobust.timing.settings import TimingCommand, TimingSettings
    from fastrobust.timing.workflow import baseline_index

    with pytest.raises(ConfigError, match=r"^timing\.repeats must be >= 1, got 0$") as info:
        TimingSettings(repeats=0)
    assert info.value.field == "timing.repeats"
    with pytest.raises(ConfigError, match=r"^timing\.gpus must be >= 1, got -2$"):
        TimingCommand(gpus=[1, -2])
    runs = [read_run(fake_run(tmp_path, "fast", "fast", [10.0], [0.4]))]
    with pytest.raises(ConfigError, match=r"^timing\.baseline 'other' is none of the runs$"):
        baseline_index("other", runs)
    assert baseline_index("fast", runs) == 0 and baseline_index(str(tmp_path / "fast"), runs) == 0
