"""Hardening, third round: stops inside a study, faults in the middle of a run, symlinks in run
folders, damaged ``last.pt`` files and the Python API's input checks.

Each case runs the command line in-process (``fastrobust.cli.main``) or the library call and
asserts the exit status or the project's error, one line naming the problem, and that nothing
was half written or lost (folders are compared byte for byte before and after).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_hardening import QUICK, one_line_error, snapshot

from fastrobust.checkpoint import load_checkpoint, save_checkpoint
from fastrobust.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory) -> Path:
    """A finished 1-epoch digits run (copy it before changing it)."""
    root = tmp_path_factory.mktemp("faults")
    argv = ["-q", "train", "--out-dir", str(root), "--name", "base", "--epochs", "1", *QUICK]
    assert main([*argv, "--schedule", "constant"]) == 0
    return root / "base"


@pytest.fixture
def run_copy(one_epoch_run, tmp_path) -> Path:
    return Path(shutil.copytree(one_epoch_run, tmp_path / "run"))


# -- resume from a damaged last.pt: one line naming the file and the key -------------------------
def _rng_of_size(n: int):
    def change(state):
        state["rng_ranks"][0]["cpu"] = torch.zeros(n, dtype=torch.uint8)

    return change


DAMAGED_LAST_PT = {
    # case: (change to the loaded last.pt, key the message names)
    "no epoch": (lambda s: s.pop("epoch"), "'epoch' is missing"),
    "epoch a string": (lambda s: s.update(epoch="2"), "'epoch' must be of type int"),
    "no config": (lambda s: s.pop("config"), "'config' is missing"),
    "config not a mapping": (lambda s: s.update(config=3), "'config' must be of type dict"),
    "config with an unknown key": (
        lambda s: s["config"].update(colour="red"),
        "'config': unknown config keys: colour",
    ),
    "scheduler not a dict": (lambda s: s.update(scheduler=[1, 2]), "'scheduler' must be"),
    "optimizer not a dict": (lambda s: s.update(optimizer="sgd"), "'optimizer' must be"),
    "history not a list": (lambda s: s.update(history=5), "'history' must be of type list"),
    "rng state of the wrong size": (_rng_of_size(7), "'rng_ranks[0].cpu' must be a uint8"),
    "no rng states": (lambda s: s.update(rng_ranks=[]), "'rng_ranks' must be a non-empty"),
    "method state not a dict": (lambda s: s.update(method_ranks=[5]), "'method_ranks' must"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_LAST_PT))
def test_a_damaged_last_pt_is_one_line_naming_file_and_key(case, run_copy, capsys):
    change, expected = DAMAGED_LAST_PT[case]
    state = load_checkpoint(run_copy / "last.pt")
    change(state)
    if isinstance(state.get("config"), dict) and "colour" not in state["config"]:
        state["config"]["epochs"] = 2  # something left to train
    save_checkpoint(run_copy / "last.pt", state)
    before = snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy)]) == 2
    message = one_line_error(capsys)
    assert str(run_copy / "last.pt") in message and expected in message, message
    assert snapshot(run_copy) == before
    assert not (run_copy / ".lock").exists()


# -- the study: Ctrl-C stops it, --resume continues the interrupted run bitwise ------------------
TRAIN_ONLY_STUDY = {
    "title": "stop",
    "methods": ["standard", "fast"],
    "training": {"epochs": 3, "eval_every": 3, "eval_limit": 20, "eval_steps": 1,
                 "overfit_check_size": 16, "schedule": "constant"},
    "stages": ["train"],
}  # fmt: skip


def _study_argv(tmp_path: Path, out: Path, **changes) -> list[str]:
    config = tmp_path / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump({**TRAIN_ONLY_STUDY, **changes}))
    return ["-q", "study", "--config", str(config), "--out", str(out), "--no-progress"]


def _stop_in_epoch_2(monkeypatch, tmp_path: Path, out: Path) -> None:
    """Run the study with Ctrl-C in its second epoch (the first method's epoch 2)."""
    from fastrobust.training.epoch import EpochTrainer

    real, calls = EpochTrainer.train_epoch, []

    def ctrl_c_in_epoch_2(self, epoch, total):
        calls.append(epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, epoch, total)

    with monkeypatch.context() as patched:
        patched.setattr(EpochTrainer, "train_epoch", ctrl_c_in_epoch_2)
        assert main(_study_argv(tmp_path, out)) == 130


def test_ctrl_c_stops_the_study_and_the_run_is_not_recorded_as_done(tmp_path, capsys, monkeypatch):
    out = tmp_path / "stopped"
    _stop_in_epoch_2(monkeypatch, tmp_path, out)
    assert "interrupted" in capsys.readouterr().err
    assert not (out / "runs" / "fast").exists()  # the study stopped: no next method
    assert load_checkpoint(out / "runs" / "standard" / "last.pt")["epoch"] == 1
    state = json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else {}
    assert "train/standard" not in json.dumps(state)
    before = snapshot(out)
    assert main(_study_argv(tmp_path, out)) == 2  # without --resume: refused in one line
    assert "--resume" in one_line_error(capsys)
    assert snapshot(out) == before


@pytest.mark.slow
def test_a_study_stopped_by_ctrl_c_resumes_bitwise_like_an_uninterrupted_one(tmp_path, monkeypatch):
    out = tmp_path / "stopped"
    _stop_in_epoch_2(monkeypatch, tmp_path, out)
    assert main([*_study_argv(tmp_path, out), "--resume"]) == 0
    assert main(_study_argv(tmp_path, tmp_path / "straight")) == 0
    for label in ("standard", "fast"):
        resumed = load_checkpoint(out / "runs" / label / "last.pt")
        straight = load_checkpoint(tmp_path / "straight" / "runs" / label / "last.pt")
        assert resumed["epoch"] == straight["epoch"] == 3
        for key, value in straight["model"].items():
            assert torch.equal(value, resumed["model"][key]), (label, key)
        for key, value in straight["optimizer"]["state"].items():
            buf = resumed["optimizer"]["state"][key]["momentum_buffer"]
            assert torch.equal(value["momentum_buffer"], buf), (label, key)
        assert torch.equal(straight["rng_ranks"][0]["cpu"], resumed["rng_ranks"][0]["cpu"])
        summary = json.loads((out / "runs" / label / "summary.json").read_text())
        assert summary["interrupted"] is False


# -- symlinks in a run folder never redirect a write outside it ---------------------------------
LINKED = [".lock", "metrics.jsonl", "summary.json", "subsets.json"]


@pytest.mark.parametrize("name", LINKED)
def test_a_symlink_in_a_run_folder_is_refused_on_resume(name, run_copy, tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    (run_copy / name).unlink(missing_ok=True)
    (run_copy / name).symlink_to(outside)
    assert main(["train", "--resume", str(run_copy), "--epochs", "2"]) == 2
    message = one_line_error(capsys)
    assert "symbolic link" in message and str(run_copy / name) in message, message
    assert outside.read_text() == "not yours"
    assert load_checkpoint(run_copy / "last.pt")["epoch"] == 1  # nothing trained


def test_a_symlinked_lock_in_a_new_run_folder_is_refused(tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / ".lock").symlink_to(outside)
    argv = ["train", "--out-dir", str(tmp_path / "runs"), "--name", "r", "--epochs", "1"]
    assert main([*argv, *QUICK]) == 2
    assert "symbolic link" in one_line_error(capsys)
    assert outside.read_text() == "not yours"
    assert sorted(p.name for p in (tmp_path / "runs" / "r").iterdir()) == [".lock"]


def test_files_written_mid_run_replace_a_link_instead_of_following_it(tmp_path):
    """Defence in depth: a link planted while the run trains is replaced (or refused, for the
    appended metrics) by the writers themselves, never followed."""
    from fastrobust.errors import OutputError
    from fastrobust.training.run_folder import RunFolder, TrainResult

    folder = RunFolder(tmp_path / "r")
    folder.path.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    for name in ("summary.json", "metrics.jsonl"):
        (folder.path / name).symlink_to(outside)
    folder.write_summary(TrainResult(folder.path, epochs_done=1))
    assert not folder.summary_json.is_symlink() and folder.read_summary()["epochs_done"] == 1
    with pytest.raises(OutputError, match="symbolic link"):
        folder.append_metrics({"epoch": 1})
    folder.rewrite_metrics([{"epoch": 1}])
    assert folder.read_metrics() == [{"epoch": 1}] and not folder.metrics_jsonl.is_symlink()
    assert outside.read_text() == "not yours"


# -- faults in the middle of a run ----------------------------------------------------------------
class _DiskFullAfter:
    """A binary file that fails with ENOSPC once ``limit`` bytes were written, as a full disk
    does (torch.save turns that OSError into a RuntimeError)."""

    def __init__(self, fh, limit: int) -> None:
        self.fh, self.left = fh, limit

    def write(self, data) -> int:
        self.left -= len(data)
        if self.left < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


@pytest.mark.slow  # ~10-35 s: in the slow run
def test_a_full_disk_while_torch_saves_last_pt_is_one_line_and_resumes(
    tmp_path, capsys, monkeypatch
):
    from fastrobust import checkpoint

    real_fdopen, saves = os.fdopen, []

    def full_from_the_third_save(fd, mode="r", *args):  # epoch 0 and 1 saved, then full
        fh = real_fdopen(fd, mode, *args)
        if ".last.pt." not in os.readlink(f"/proc/self/fd/{fd}"):
            return fh
        saves.append(fd)
        return _DiskFullAfter(fh, 10_000) if len(saves) >= 3 else fh

    monkeypatch.setattr(checkpoint.os, "fdopen", full_from_the_third_save)
    run = tmp_path / "r"
    argv = ["train", "--out-dir", str(tmp_path), "--name", "r", "--epochs", "2", *QUICK]
    assert main([*argv, "--schedule", "constant"]) == 2
    message = one_line_error(capsys)
    assert "No space left on device" in message and "last.pt" in message, message
    assert f"fastrobust train --resume {run}" in message
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no half-written file
    monkeypatch.setattr(checkpoint.os, "fdopen", real_fdopen)
    assert main(["-q", "train", "--resume", str(run)]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_a_run_folder_deleted_mid_run_stops_in_one_line(tmp_path, capsys, monkeypatch):
    from fastrobust.training.epoch import EpochTrainer

    real = EpochTrainer.train_epoch
    run = tmp_path / "r"

    def delete_in_epoch_2(self, epoch, total):
        if epoch == 1:
            shutil.rmtree(run)
        return real(self, epoch, total)

    monkeypatch.setattr(EpochTrainer, "train_epoch", delete_in_epoch_2)
    argv = ["train", "--out-dir", str(tmp_path), "--name", "r", "--epochs", "2", *QUICK]
    assert main(argv) == 2
    message = one_line_error(capsys)
    assert "deleted or moved while training" in message and str(run) in message
    assert not run.exists()  # not silently re-created without config.yaml


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_run_folder_mid_run_keeps_the_real_error(tmp_path, capsys, monkeypatch):
    from fastrobust.training.epoch import EpochTrainer

    real = EpochTrainer.train_epoch
    run = tmp_path / "r"

    def read_only_in_epoch_2(self, epoch, total):
        if epoch == 1:
            run.chmod(0o500)
        return real(self, epoch, total)

    monkeypatch.setattr(EpochTrainer, "train_epoch", read_only_in_epoch_2)
    argv = ["train", "--out-dir", str(tmp_path), "--name", "r", "--epochs", "3", *QUICK]
    try:
        assert main(argv) == 2
        message = one_line_error(capsys)
    finally:
        run.chmod(0o700)
    assert "Permission denied" in message and f"--resume {run}" in message, message


def test_a_lock_that_cannot_be_removed_does_not_mask_the_error(tmp_path, monkeypatch):
    """Root ignores read-only folders: the lock's removal failing is simulated."""
    from fastrobust.training.run_folder import RunLock

    lock = RunLock(tmp_path)
    lock.acquire()

    def refuse(self, missing_ok=False):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    lock.release()  # no error of its own: the run's error is the one reported
    assert lock.fd is None


def test_a_corrupt_image_found_by_a_worker_is_one_line(tmp_path):
    from PIL import Image

    from fastrobust.data.disk_loader import DiskLoader
    from fastrobust.data.imagefolder import LazyImages
    from fastrobust.errors import DataError

    files = []
    for i in range(4):
        files.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(files[-1])
    files[2].write_bytes(b"not a png")
    loader = DiskLoader(LazyImages(files, 8), torch.arange(4), 2, workers=1, shuffle=False)
    with pytest.raises(DataError) as caught:
        list(loader)
    text = str(caught.value)
    assert "\n" not in text and "Traceback" not in text and str(files[2]) in text, text


# -- the study refuses before any work, and a refused rerun changes nothing ----------------------
@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the study started training before refusing")

    monkeypatch.setattr("fastrobust.training.fit", refuse)
    monkeypatch.setattr("fastrobust.training.resume", refuse)


STUDY_REFUSALS = {
    # case: (study config changes, message)
    "an unknown judge model": (
        {"stages": ["train", "alignment"], "alignment": {"judges": ["nosuchnet"]}},
        "judge 'nosuchnet' is no model",
    ),
    "a judge of the studied architecture": (
        {"stages": ["train", "alignment"], "alignment": {"judges": ["small_cnn"]}},
        "has the architecture of the models under study",
    ),
}


@pytest.mark.parametrize("case", sorted(STUDY_REFUSALS))
def test_study_judges_are_checked_before_any_work(case, tmp_path, capsys, no_training):
    changes, expected = STUDY_REFUSALS[case]
    out = tmp_path / "s"
    assert main(_study_argv(tmp_path, out, **changes)) == 2
    assert expected in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("stage", ["curves", "table1", "figures", "alignment"])
def test_only_a_stage_without_trained_runs_writes_nothing(stage, tmp_path, capsys, no_training):
    out = tmp_path / "s"
    assert main([*_study_argv(tmp_path, out), "--only", stage]) == 2
    assert "run the train stage first" in one_line_error(capsys)
    assert not out.exists()


@pytest.fixture(scope="module")
def trained_study(tmp_path_factory) -> tuple[Path, Path]:
    """A finished train-only study (its config file, its folder): copy before changing it."""
    root = tmp_path_factory.mktemp("study")
    training = {**TRAIN_ONLY_STUDY["training"], "epochs": 1}
    argv = _study_argv(root, root / "s", methods=["standard"], training=training)
    assert main(argv) == 0
    return root / "s.yaml", root / "s"


def test_a_refused_rerun_with_other_settings_leaves_the_study_untouched(
    trained_study, tmp_path, capsys, no_training
):
    out = Path(shutil.copytree(trained_study[1], tmp_path / "s"))
    before = snapshot(out)
    changed = {**TRAIN_ONLY_STUDY["training"], "epochs": 1, "lr": 0.05}
    assert main(_study_argv(tmp_path, out, methods=["standard"], training=changed)) == 2
    assert "trained with other settings" in one_line_error(capsys)
    assert snapshot(out) == before  # study.yaml included


# -- timing: every mistake is one line naming the flag, before the output folder is made --------
def _damaged_run(one_epoch_run: Path, tmp_path: Path, name: str, text: str) -> Path:
    run = Path(shutil.copytree(one_epoch_run, tmp_path / f"run-{name.split('.')[0]}"))
    (run / name).write_text(text)
    return run


TIMING_MISTAKES = {
    # case: (flags, expected in the message; "{run}" is a finished run folder)
    "no repeats": (["--repeats", "0"], "--repeats must be >= 1"),
    "no processes": (["--procs", "0"], "--procs must be >= 1"),
    "an unknown model": (["--model", "nosuchnet"], "unknown model 'nosuchnet'"),
    "an unknown device": (["--device", "nosuchdevice"], "unknown device 'nosuchdevice'"),
    "a nan eps": (["--eps", "nan"], "--eps"),
    "no training images": (["--train-size", "0"], "--train-size must be >= 1"),
    "no epochs": (["--epochs", "0"], "--epochs must be >= 1"),
    "no validation interval": (["--eval-every", "0"], "--eval-every must be >= 1"),
    "a baseline that is no run": (["--runs", "{run}", "--baseline", "7"], "baseline"),
    "GPU counts dividing no global batch": (
        ["--gpus", "3", "--global-batch", "128"],
        "--gpus 3: none divides the global batch 128",
    ),
    "a corrupt summary.json": (["--runs", "{summary}"], "summary.json is not readable JSON"),
    "an invalid config.yaml": (["--runs", "{config}"], "config.yaml is not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(TIMING_MISTAKES))
def test_timing_mistakes_are_one_line_and_leave_no_folder(
    case, one_epoch_run, tmp_path, capsys, monkeypatch
):
    def refuse(*args, **kwargs):
        raise AssertionError("timing measured before checking its settings")

    monkeypatch.setattr("fastrobust.timing.measure.measure_curves", refuse)
    flags, expected = TIMING_MISTAKES[case]
    runs = {
        "{run}": one_epoch_run,
        "{summary}": _damaged_run(one_epoch_run, tmp_path, "summary.json", "{not json"),
        "{config}": _damaged_run(one_epoch_run, tmp_path, "config.yaml", "a: [1,\n b: {"),
    }
    flags = [str(runs.get(f, f)) for f in flags]
    out = tmp_path / "timing"
    argv = ["timing", "--out", str(out), "--batch-sizes", "8", "--steps", "1", *flags]
    assert main(argv) == 2
    message = one_line_error(capsys)
    assert expected in message, message
    assert not out.exists()


# -- the Python API: robustness_curve's inputs raise the project's errors before any attack -----
def _api_inputs():
    from torch import nn

    from fastrobust.models import NormalizedModel

    torch.manual_seed(0)
    model = NormalizedModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), [0.0], [1.0])
    return model.eval(), torch.rand(12, 1, 8, 8), torch.arange(12) % 10


def _with_nan(x):
    x = x.clone()
    x[3, 0, 2, 2] = float("nan")
    return x


CURVE_MISTAKES = {
    # case: (keywords changed, error class name, message part)
    "norm None": ({"threat_name": None}, "ConfigError", "norm must be one of l2, linf"),
    "eps as a string": ({"eps_list": "0,1"}, "ConfigError", "parse_eps_list"),
    "eps as a scalar": ({"eps_list": 1.0}, "ConfigError", "eps must be a list of numbers"),
    "eps holding text": ({"eps_list": [0, "a"]}, "ConfigError", "values must be numbers"),
    "a nan step_size_factor": ({"step_size_factor": float("nan")}, "ConfigError", "not finite"),
    "settings as a dict": ({"settings": {"steps": 1}}, "ConfigError", "must be a CurveSettings"),
    "float images in 0-255": ({"scale": 255.0}, "DataError", "divide by 255"),
    "normalised images": ({"shift": -0.5}, "DataError", "must lie in [0,1]"),
    "NaN images": ({"nan": True}, "DataError", "NaN or infinite"),
    "float labels": ({"float_labels": True}, "DataError", "integer class indices"),
}


@pytest.mark.parametrize("case", sorted(CURVE_MISTAKES))
def test_robustness_curve_input_mistakes_raise_the_projects_errors(case, monkeypatch):
    from fastrobust import errors
    from fastrobust.evaluation.curve import robustness_curve
    from fastrobust.evaluation.settings import CurveSettings

    def refuse(*args, **kwargs):
        raise AssertionError("an attack ran before the inputs were checked")

    monkeypatch.setattr("fastrobust.evaluation.curve._curve_chunk", refuse)
    changes, error, expected = CURVE_MISTAKES[case]
    model, x, y = _api_inputs()
    x = _with_nan(x) if changes.get("nan") else x * changes.get("scale", 1.0)
    x = x + changes.get("shift", 0.0)
    y = y.float() if changes.get("float_labels") else y
    settings = CurveSettings(steps=1, restarts=1, checks=False)
    if "step_size_factor" in changes:
        with pytest.raises(errors.ConfigError, match=expected):
            CurveSettings(steps=1, step_size_factor=changes["step_size_factor"])
        return
    with pytest.raises(getattr(errors, error)) as caught:
        robustness_curve(
            model,
            (x, y),
            changes.get("threat_name", "l2"),
            changes.get("eps_list", [0, 1]),
            changes.get("settings", settings),
        )
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_robustness_curve_takes_eps_as_any_sequence_of_numbers():
    """The checks above refuse text and scalars, not numpy arrays or tensors of eps."""
    import numpy as np

    from fastrobust.evaluation.curve import robustness_curve
    from fastrobust.evaluation.settings import CurveSettings

    model, x, y = _api_inputs()
    settings = CurveSettings(steps=1, restarts=1, checks=False)
    given = [np.array([0.0, 0.5]), torch.tensor([0.0, 0.5]), (0, 0.5)]
    curves = [robustness_curve(model, (x, y), "l2", eps, settings) for eps in given]
    assert all(c.eps == [0.0, 0.5] for c in curves)


# -- a model factory with the wrong signature ----------------------------------------------------
WRONG_FACTORY = "fastrobust_test_wrong_factory"


@pytest.fixture
def wrong_factory(tmp_path, monkeypatch):
    folder = tmp_path / "on_path"
    folder.mkdir()
    (folder / f"{WRONG_FACTORY}.py").write_text(
        "from torch import nn\n"
        "def needs_depth(num_classes, depth):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    yield f"{WRONG_FACTORY}:needs_depth"
    sys.modules.pop(WRONG_FACTORY, None)


def test_a_model_factory_with_the_wrong_signature_is_one_line(wrong_factory, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["train", "--out-dir", str(out), "--name", "r", "--model", wrong_factory, *QUICK]
    assert main(argv) == 2
    message = one_line_error(capsys)
    assert wrong_factory in message and "depth" in message, message
    assert not (out / "r").exists()


# -- symlinks in output folders (eval, visualize, timing, study) ----------------------------------
LINKED_OUTPUTS = {
    # command: (argv after the command with {out} and {run}, the linked file)
    "eval": (["{run}", "--eps", "0,1", "--out", "{out}"], "robustness.json"),
    "visualize": (["targeted", "{run}", "--out", "{out}"], "grid.png"),
    "timing": (["--out", "{out}", "--batch-sizes", "8"], "measured.csv"),
    "study": (["--out", "{out}", "--no-progress"], "curves/robustness.png"),
}


@pytest.mark.parametrize("command", sorted(LINKED_OUTPUTS))
def test_a_symlink_in_an_output_folder_is_refused_before_the_work(
    command, one_epoch_run, tmp_path, capsys, monkeypatch
):
    def refuse(*args, **kwargs):
        raise AssertionError("the work started before the output folder was checked")

    monkeypatch.setattr("fastrobust.checkpoint.load_tensors_file", refuse)
    monkeypatch.setattr("fastrobust.timing.measure.measure_curves", refuse)
    monkeypatch.setattr("fastrobust.data.load_dataset", refuse)
    argv, name = LINKED_OUTPUTS[command]
    out, outside = tmp_path / "out", tmp_path / "outside.txt"
    outside.write_text("not yours")
    (out / name).parent.mkdir(parents=True)
    (out / name).symlink_to(outside)
    if command == "study":
        (out / "study.yaml").write_text("{}\n")  # a study folder
    values = {"{out}": str(out), "{run}": str(one_epoch_run)}
    assert main([command, *(values.get(a, a) for a in argv)]) == 2
    message = one_line_error(capsys)
    assert "symbolic link" in message and str(out / name) in message, message
    assert outside.read_text() == "not yours"


def test_a_training_image_corrupted_mid_run_is_one_line(tmp_path, capsys, monkeypatch):
    """The image is decodable when the run starts (the preflight decodes it) and corrupt
    when a DataLoader worker reads it in epoch 2: the worker's DataError, in one line."""
    from PIL import Image

    from fastrobust.training.epoch import EpochTrainer

    data = tmp_path / "images"
    for split, n in (("train", 4), ("val", 2)):
        for c, cls in enumerate(("cat", "dog")):
            (data / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (40 * c + 10 * i, 0, 0)).save(
                    data / split / cls / f"{i}.png"
                )
    victim = data / "train" / "dog" / "2.png"
    real = EpochTrainer.train_epoch

    def corrupt_in_epoch_2(self, epoch, total):
        if epoch == 1:
            victim.write_bytes(b"not a png any more")
        return real(self, epoch, total)

    monkeypatch.setattr(EpochTrainer, "train_epoch", corrupt_in_epoch_2)
    argv = ["train", "--dataset", "imagefolder", "--data-dir", str(data), "--workers", "1"]
    argv += ["--out-dir", str(tmp_path / "runs"), "--name", "r", "--epochs", "3", *QUICK]
    assert main([*argv, "--batch-size", "4"]) == 2
    message = one_line_error(capsys)
    assert str(victim) in message, message
    assert load_checkpoint(tmp_path / "runs" / "r" / "last.pt")["epoch"] == 1  # kept
