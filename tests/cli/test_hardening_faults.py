"""Hardening, third round: stops inside a study, faults in the middle of a run, symlinks in run
folders, damaged ``last.pt`` files and the Python API's input checks.

Each case runs the command line in-process (``fastrobust.cli.main``) or the library call and
asserts the exit status or the project's error, one line naming the problem, and that nothing
was half written or lost (folders are compared byte for byte before and after).
"""

from __future__ import annotations

import json
import shutil
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


def test_ctrl_c_stops_the_study_and_resume_continues_it_exactly(tmp_path, capsys, monkeypatch):
    from fastrobust.training.epoch import EpochTrainer

    real = EpochTrainer.train_epoch
    calls = []

    def ctrl_c_in_epoch_2(self, epoch, total):
        calls.append(epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, epoch, total)

    monkeypatch.setattr(EpochTrainer, "train_epoch", ctrl_c_in_epoch_2)
    out = tmp_path / "stopped"
    assert main(_study_argv(tmp_path, out)) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (out / "runs" / "fast").exists()  # the study stopped: no next method
    assert load_checkpoint(out / "runs" / "standard" / "last.pt")["epoch"] == 1
    state = json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else {}
    assert "train/standard" not in json.dumps(state)

    monkeypatch.setattr(EpochTrainer, "train_epoch", real)
    assert main(_study_argv(tmp_path, out)) == 2  # without --resume: refused in one line
    assert "--resume" in one_line_error(capsys)
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
