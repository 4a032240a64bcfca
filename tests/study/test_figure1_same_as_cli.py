"""The study's Figure 1 and Table I stages and ``fastrobust timing`` are one workflow: for the
same settings and runs they write the same files, byte for byte."""

from __future__ import annotations

import itertools

import pytest

from fastrobust.cli import main
from fastrobust.data import load_dataset
from fastrobust.data.facts import KNOWN_FACTS, DatasetFacts
from fastrobust.study.config import StudyConfig
from fastrobust.study.runner import run_study

TIMING = {"batch_sizes": [8, 16], "steps": [1], "repeats": 1, "warmup": 0, "gpus": [1, 2]}
STUDY = {
    "title": "timing",
    "methods": ["standard", "pgd-2"],
    "training": {"epochs": 1, "eval_limit": 20, "eval_steps": 1, "overfit_check_size": 8},
    "timing": TIMING,
    "stages": ["train", "table1", "figure1", "report"],
}
FILES = ("measured.csv", "estimate_batch.csv", "estimate_gpus.csv", "steps.json", "timing.png")


@pytest.fixture
def fake_clock(monkeypatch):
    """Timed calls return made-up seconds in call order (the same order on both paths), so
    the files depend only on what is measured, never on how fast this machine is."""

    def install():
        counter = itertools.count(1)

        def fake_time_call(fn, device, *, repeats, warmup, min_sample_s=0.02):
            t = 1e-3 * next(counter)
            return t, t / 2

        monkeypatch.setattr("fastrobust.timing.measure.time_call", fake_time_call)

    return install


def test_study_stages_and_the_timing_command_write_the_same_files(
    tmp_path, fake_clock, one_thread, capsys
):
    fake_clock()
    study = tmp_path / "study"
    run_study(StudyConfig.from_dict(STUDY), study)
    runs = [str(study / "runs" / label) for label in ("standard", "pgd-2")]
    fake_clock()  # the same made-up clock from the start
    out = tmp_path / "cli"
    argv = ["-q", "timing", "--runs", *runs, "--measure", "--baseline", "0", "--device", "cpu"]
    argv += ["--batch-sizes", "8,16", "--steps", "1", "--repeats", "1", "--warmup", "0"]
    argv += ["--gpus", "1,2", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    for name in (*FILES, "table1.csv", "table1.json"):
        made_by_study = (study / "timing" / name).read_bytes()
        assert made_by_study == (out / name).read_bytes(), name
    # the estimates cover standard training and every run's attack, whatever was measured
    assert "pgd2" in (out / "steps.json").read_text()


def test_known_dataset_facts_are_the_loaded_datasets():
    """The facts written down for digits are what the loader gives (CIFAR's are fixed by the
    format: 50,000 training and 10,000 test images of 3x32x32)."""
    assert KNOWN_FACTS["digits"] == DatasetFacts.of(load_dataset("digits"))
    assert KNOWN_FACTS["cifar10"].num_classes == 10
    assert KNOWN_FACTS["cifar100"].image_shape == (3, 32, 32)
