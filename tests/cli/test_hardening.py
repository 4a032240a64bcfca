"""Hardening: no checkpoint runs code, no output mistake becomes a traceback, no stop loses work.

Every case runs the command line in-process (``fastrobust.cli.main``) and asserts the exit
status, a one-line message naming the problem, and that nothing was half written or lost:
folders it must not touch are compared byte for byte before and after. Only the signal test
starts a real process.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import tiny_config
from fastrobust import load_model
from fastrobust.checkpoint import load_checkpoint, save_checkpoint
from fastrobust.cli import main
from fastrobust.errors import CheckpointError
from fastrobust.models import NormalizedModel
from fastrobust.training import fit
from fastrobust.training.run_folder import RunFolder

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

#: flags of a short digits run (seconds per epoch)
QUICK = ["--no-progress", "--eval-limit", "20", "--eval-steps", "1", "--overfit-check-size", "16"]
EVIL_MODULE = "fastrobust_test_evil_factory"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The error the last command printed: exactly one line on stderr, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def fast_run(root: Path, name: str, **overrides) -> Path:
    base = dict(epochs=2, schedule="constant", eval_limit=20, eval_steps=1, overfit_check_size=16)
    return fit(tiny_config(root, name=name, **(base | overrides))).run_dir


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory) -> dict[str, Path]:
    """2-epoch run folders: ``constant`` and ``onecycle`` schedules (copy before changing)."""
    root = tmp_path_factory.mktemp("hardening-runs")
    return {s: fast_run(root, s, schedule=s) for s in ("constant", "onecycle")}


@pytest.fixture
def run_copy(finished_runs, tmp_path):
    def copy(schedule: str = "constant") -> Path:
        return Path(shutil.copytree(finished_runs[schedule], tmp_path / f"copy-{schedule}"))

    return copy


# -- security: a checkpoint never makes fastrobust import or call what it names ------------------
@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module on sys.path whose import writes a file: the proof that it was imported."""
    folder = tmp_path / "on_path"
    folder.mkdir()
    marker = tmp_path / "imported.txt"
    (folder / f"{EVIL_MODULE}.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "from torch import nn\n"
        "def Net(num_classes, in_channels, image_size):\n"
        "    return nn.Sequential(nn.Flatten(),"
        " nn.Linear(in_channels * image_size * image_size, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    yield marker
    sys.modules.pop(EVIL_MODULE, None)


def checkpoint_naming(path: Path, factory: str) -> Path:
    """A well-formed fastrobust checkpoint whose model spec names ``factory``."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model = NormalizedModel(net, [0.0], [1.0])
    spec = dict(name=factory, num_classes=10, in_channels=1, image_size=8, mean=[0.0], std=[1.0])
    config = {"dataset": "digits", "method": "fast", "norm": "l2", "eps": 1.0}
    state = {
        "model": model.state_dict(),
        "model_spec": spec,
        "classes": [str(i) for i in range(10)],
    }
    save_checkpoint(path, {**state, "config": config, "epoch": 1, "metrics": {}})
    return path


@pytest.mark.parametrize("factory", ["os:abort", "code:interact", f"{EVIL_MODULE}:Net"])
@pytest.mark.parametrize("command", ["eval", "visualize", "load_model"])
def test_a_checkpoint_naming_a_factory_is_refused_without_importing_it(
    command, factory, evil_module, tmp_path, capsys
):
    ckpt = checkpoint_naming(tmp_path / "best.pt", factory)
    out = tmp_path / "out"
    if command == "load_model":
        with pytest.raises(CheckpointError, match="import_factory") as caught:
            load_model(ckpt)
        message = str(caught.value)
    else:
        argv = {
            "eval": ["eval", str(ckpt), "--eps", "0,1", "--out", str(out)],
            "visualize": ["visualize", "targeted", str(ckpt), "--out", str(out)],
        }[command]
        assert main(argv) == 2
        message = one_line_error(capsys)
    # the library names its keyword, the command line the flag
    flag = "import_factory" if command == "load_model" else "--import-model-factory"
    assert factory in message and flag in message and "net=" in message
    assert EVIL_MODULE not in sys.modules and not evil_module.exists()
    assert not out.exists()


def test_the_factory_is_imported_only_when_asked(evil_module, tmp_path):
    """The opt-in works, so the refusals above are the default and not a broken import."""
    ckpt = checkpoint_naming(tmp_path / "best.pt", f"{EVIL_MODULE}:Net")
    model = load_model(ckpt, import_factory=True)
    assert evil_module.read_text() == "imported" and EVIL_MODULE in sys.modules
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_resume_does_not_import_a_factory_named_by_last_pt(evil_module, run_copy, capsys):
    run = run_copy()
    state = load_checkpoint(run / "last.pt")
    state["model_spec"]["name"] = state["config"]["model"] = f"{EVIL_MODULE}:Net"
    state["config"]["epochs"] = 3
    save_checkpoint(run / "last.pt", state)
    before = snapshot(run)
    assert main(["train", "--resume", str(run)]) == 2
    assert "--import-model-factory" in one_line_error(capsys)
    assert EVIL_MODULE not in sys.modules and not evil_module.exists()
    assert snapshot(run) == before


@pytest.mark.parametrize("name", ["../escaped", "", " ", ".", "..", "a/b", "/abs/run"])
def test_run_names_are_one_folder_name(name, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--out-dir", str(out), "--name", name, "--epochs", "1", *QUICK]) == 2
    message = one_line_error(capsys)
    assert "error: --name" in message and "folder name" in message, message
    assert snapshot(tmp_path) == {}
    assert not out.exists()


# -- outputs: checked before the work, write failures in one line, finished files kept -----------
def _file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("keep me")
    return path


OUTPUT_CASES = {
    # case: (output path relative to tmp_path, expected message)
    "an existing file": ("a-file", "is an existing file"),
    "under a file": ("a-file/sub", "a-file is a file"),
}


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command starts its real work (training, attacking, measuring)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the work started before the output location was checked")

    monkeypatch.setattr("fastrobust.training.preflight.load_dataset", refuse)
    monkeypatch.setattr("fastrobust.checkpoint.load_tensors_file", refuse)
    monkeypatch.setattr("fastrobust.timing.measure.measure_curves", refuse)


def _output_argv(command: str, out: Path, finished_runs: dict[str, Path]) -> list[str]:
    run = str(finished_runs["constant"])
    return {
        "train": ["train", "--out-dir", str(out), "--name", "r", "--epochs", "1", *QUICK],
        "eval": ["eval", run, "--eps", "0,1", "--out", str(out)],
        "visualize": ["visualize", "targeted", run, "--out", str(out)],
        "timing": ["timing", "--out", str(out), "--batch-sizes", "8"],
    }[command]


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
@pytest.mark.parametrize("command", ["train", "eval", "visualize", "timing"])
def test_a_bad_output_location_is_refused_before_the_work(
    command, case, finished_runs, tmp_path, capsys, no_work
):
    _file(tmp_path)
    relative, expected = OUTPUT_CASES[case]
    before = snapshot(tmp_path)
    assert main(_output_argv(command, tmp_path / relative, finished_runs)) == 2
    message = one_line_error(capsys)
    assert expected in message and str(tmp_path / "a-file") in message
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["train", "eval", "visualize", "timing"])
def test_a_full_disk_is_found_before_the_work(
    command, finished_runs, tmp_path, capsys, no_work, monkeypatch
):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("fastrobust.outputs.os.fsync", disk_full)
    out = tmp_path / "out"
    assert main(_output_argv(command, out, finished_runs)) == 2
    message = one_line_error(capsys)
    assert "No space left on device" in message and str(tmp_path) in message
    assert snapshot(tmp_path) == {}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["train", "--out-dir", str(locked), "--epochs", "1", *QUICK]) == 2
        assert "Permission denied" in one_line_error(capsys)
    finally:
        locked.chmod(0o700)


def test_eval_keeps_the_files_written_before_a_failure(
    finished_runs, tmp_path, capsys, monkeypatch
):
    def disk_full_on_plot(curves, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("fastrobust.evaluation.report.plot_curves", disk_full_on_plot)
    out = tmp_path / "ev"
    run = str(finished_runs["constant"])
    argv = ["eval", run, "--eps", "0,1", "--steps", "1", "--restarts", "1", "--limit", "10"]
    assert main([*argv, "--no-checks", "--no-progress", "--out", str(out)]) == 2
    message = one_line_error(capsys)
    assert "No space left on device" in message and "robustness.png" in message
    assert "kept" in message
    assert json.loads((out / "robustness.json").read_text())["models"]
    assert (out / "robustness.csv").read_text().count("\n") == 3


def test_a_failed_checkpoint_write_keeps_the_last_epoch(tmp_path, capsys, monkeypatch):
    from fastrobust.training import run_folder

    real_save = run_folder.save_checkpoint

    def disk_full_at_epoch_2(path, state):
        if state["epoch"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_save(path, state)

    monkeypatch.setattr(run_folder, "save_checkpoint", disk_full_at_epoch_2)
    argv = ["train", "--out-dir", str(tmp_path), "--name", "r", "--epochs", "3", *QUICK]
    assert main(argv) == 2
    message = one_line_error(capsys)
    assert "No space left on device" in message and str(tmp_path / "r") in message
    assert (
        f"resumes from its last saved epoch: fastrobust train --resume {tmp_path / 'r'}" in message
    )
    assert load_checkpoint(tmp_path / "r" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(run_folder, "save_checkpoint", real_save)
    assert main(["-q", "train", "--resume", str(tmp_path / "r")]) == 0
    assert load_checkpoint(tmp_path / "r" / "last.pt")["epoch"] == 3


# -- run folders: unique and locked ----------------------------------------------------------------
def test_a_second_resume_of_a_live_run_fails_cleanly(run_copy, capsys):
    run = run_copy()
    live = RunFolder(run)
    live.lock()  # what a training process holds (a real process holds it in the signal test)
    try:
        before = snapshot(run)
        assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
        message = one_line_error(capsys)
        assert f"in use by process {os.getpid()}" in message and str(run) in message
        assert snapshot(run) == before
    finally:
        live.unlock()


# -- resume semantics -------------------------------------------------------------------------------
RESUME_CASES = [
    # (schedule, --epochs or None, exit status, message naming the problem, stream)
    ("constant", "1", 2, "below the 2 epochs", "err"),
    ("constant", "2", 0, "nothing to do", "out"),
    ("constant", None, 0, "nothing to do", "out"),
    ("onecycle", "3", 2, "onecycle schedule", "err"),
    ("onecycle", "1", 2, "below the 2 epochs", "err"),
]


@pytest.mark.parametrize("schedule,epochs,status,expected,stream", RESUME_CASES)
def test_resume_refusals_and_nothing_to_do_leave_the_run_untouched(
    schedule, epochs, status, expected, stream, run_copy, capsys
):
    run = run_copy(schedule)
    before = snapshot(run)
    argv = ["train", "--resume", str(run)] + (["--epochs", epochs] if epochs else [])
    assert main(argv) == status
    captured = capsys.readouterr()
    text = captured.err if stream == "err" else captured.out
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], text
    assert "Traceback" not in captured.err
    assert snapshot(run) == before


def test_extending_a_constant_run_equals_the_longer_run_and_keeps_its_config(
    run_copy, tmp_path, capsys
):
    run = run_copy("constant")
    config_before = (run / "config.yaml").read_bytes()
    assert main(["-q", "train", "--resume", str(run), "--epochs", "3"]) == 0
    assert (run / "config.yaml").read_bytes() == config_before  # the plan of epochs 1-2
    change = {"at_epoch": 2, "from_epochs": 2, "to_epochs": 3}
    assert json.loads((run / "summary.json").read_text())["extensions"] == [change]
    extended = load_checkpoint(run / "last.pt")
    assert extended["extensions"] == [change] and extended["epoch"] == 3
    longer = load_checkpoint(fast_run(tmp_path, "longer", epochs=3) / "last.pt")
    for key, value in longer["model"].items():
        assert torch.equal(value, extended["model"][key]), key


# -- stops: SIGTERM (and Ctrl-C) save a resumable state -----------------------------------------
def _wait_for_epochs(metrics: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach {n} epoch(s): {proc.communicate()}")


def _weights_and_rows(run: Path) -> tuple[dict, list]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # no times
    return load_checkpoint(run / "last.pt")["model"], rows


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(signal.SIGTERM, id="SIGTERM"),
        pytest.param(signal.SIGINT, id="Ctrl-C", marks=pytest.mark.slow),
    ],
)
def test_a_stopped_run_resumes_bitwise_like_an_uninterrupted_one(stop, tmp_path, capsys):
    argv = ["train", "--epochs", "4", "--out-dir", str(tmp_path), *QUICK]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastrobust", *argv, "--name", "stopped"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    run = tmp_path / "stopped"
    _wait_for_epochs(run / "metrics.jsonl", 1, proc)
    # a second writer on the live run is refused, naming the process that trains in it
    assert main(["train", "--resume", str(run)]) == 2
    assert f"in use by process {proc.pid}" in one_line_error(capsys)
    seen = len((run / "metrics.jsonl").read_text().splitlines())
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + stop, err
    assert "Traceback" not in err
    assert f"resume with: fastrobust train --resume {run}" in out
    saved = load_checkpoint(run / "last.pt")["epoch"]
    assert seen <= saved < 4  # nothing lost but the epoch in flight
    assert len((run / "metrics.jsonl").read_text().splitlines()) == saved
    assert not (run / ".lock").exists()

    assert main(["-q", "train", "--resume", str(run)]) == 0
    assert main(["-q", *argv, "--name", "uninterrupted"]) == 0
    resumed, rows = _weights_and_rows(run)
    uninterrupted, rows_ref = _weights_and_rows(tmp_path / "uninterrupted")
    assert rows == rows_ref and len(rows) == 4
    for key, value in uninterrupted.items():
        assert torch.equal(value, resumed[key]), key
