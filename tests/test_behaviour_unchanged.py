"""The redesign changed no behaviour: the default digits job (8 epochs, seed 0) gives bitwise the
weights and the metrics recorded by the code before the move (tests/fixtures, written by
tests/fixtures/record_reference.py at commit d4c3484), and a checkpoint written then still loads
and evaluates to the accuracy recorded then.

Two metrics changed on purpose since: ``overfit_check_pgd_acc`` and ``val_adv_acc``. The
overfitting monitor's fixed training batch is now a class-stratified sample
(fastrobust.data.subsets) instead of the first 256 images of a random permutation, and
validation and the check attack in chunks of the per-rank training batch (not of
``max(global batch, 256)``), so their random starts are drawn in other chunks. Both run on their
own random stream and (without early stopping) never touch training, so the weights and every
other metric must still be bitwise the recorded ones.

The default schedule changed on purpose too: ``eval_every`` and ``overfit_check_every`` are
``auto`` (on digits every 35 and 13 epochs, so an 8-epoch default job validates at epoch 8
only and never checks). The recorded job validated and checked every epoch, so it is rerun
with both intervals 1 and compared row by row as before; the default job itself must give the
same weights bitwise, and the same clean validation accuracy at the epoch it validates.

Bitwise results depend on the CPU's kernels: ATen picks its vectorised kernels by the CPU
capability (``torch.backends.cpu.get_cpu_capability()``), and the last bits of a float sum differ
between them. The references at the top of tests/fixtures were recorded on the CI machine of
their day; tests/fixtures/cpu_<capability>/ holds the same references recorded by the same old
commits (d4c3484, 7d69892) on a CPU of that capability, and the tests use those where they
exist."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

import fastrobust as fr
from fastrobust.checkpoint import load_checkpoint
from fastrobust.data import load_dataset
from fastrobust.errors import ConfigError
from fastrobust.evaluation import CurveSettings
from fastrobust.training.config import SCHEMA_VERSION

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = json.loads((FIXTURES / "default_job_reference.json").read_text())
PLATFORM_FIXTURES = FIXTURES / f"cpu_{torch.backends.cpu.get_cpu_capability().lower()}"
if (PLATFORM_FIXTURES / "default_job_reference.json").exists():
    # the same job recorded by the same commit on this CPU capability: weights and metrics
    REFERENCE |= {
        key: value
        for key, value in json.loads(
            (PLATFORM_FIXTURES / "default_job_reference.json").read_text()
        ).items()
        if key in ("weights_sha256", "metrics")
    }
PRE_REDESIGN_RUN = next(
    folder
    for folder in (PLATFORM_FIXTURES / "pre_redesign_run", FIXTURES / "pre_redesign_run")
    if folder.is_dir()
)


def _weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


CHANGED_ON_PURPOSE = {"overfit_check_pgd_acc", "val_adv_acc"}  # see the module docstring


def _without_times(row: dict) -> dict:
    """A metrics row without wall-clock times, the metrics changed on purpose, and ``attack``
    (the label of the epoch's training attack that rows carry since the reference was recorded;
    it measures nothing)."""
    return {
        k: v
        for k, v in row.items()
        if not k.endswith("_s") and k not in CHANGED_ON_PURPOSE and k != "attack"
    }


@pytest.fixture()
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference was recorded on one thread
    yield
    torch.set_num_threads(threads)


def _run(tmp_path: Path, name: str, **settings) -> tuple[list[dict], str]:
    """Metrics rows and the final weights' digest of the reference job with ``settings``."""
    cfg = fr.TrainConfig(**REFERENCE["train_config"], out_dir=str(tmp_path), name=name, **settings)
    result = fr.fit(cfg)
    state = load_checkpoint(result.run_dir / "last.pt")
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], _weights_sha256(state["model"])


def test_default_job_is_bitwise_unchanged(tmp_path, single_thread):
    # the schedule the reference was recorded with: validation and check after every epoch
    rows, digest = _run(tmp_path, "ref", eval_every=1, overfit_check_every=1)
    assert [_without_times(r) for r in rows] == [_without_times(r) for r in REFERENCE["metrics"]]
    assert all(0 <= r["val_adv_acc"] <= 1 and 0 <= r["overfit_check_pgd_acc"] <= 1 for r in rows)
    assert digest == REFERENCE["weights_sha256"]


def test_default_schedule_leaves_training_bitwise_unchanged(tmp_path, single_thread):
    rows, digest = _run(tmp_path, "auto")  # eval_every, overfit_check_every: auto
    assert digest == REFERENCE["weights_sha256"]
    validated = [r["epoch"] for r in rows if "val_clean_acc" in r]
    assert validated == [len(rows)]  # every 35 epochs and at the last: the last only
    assert not any("overfit_check_pgd_acc" in r for r in rows)  # every 13: none in 8 epochs
    trained = {"train_loss", "train_acc", "lr"}
    for got, want in zip(rows, REFERENCE["metrics"], strict=True):
        assert {k: got[k] for k in trained} == {k: want[k] for k in trained}
        if "val_clean_acc" in got:
            assert got["val_clean_acc"] == want["val_clean_acc"]


def test_pre_redesign_checkpoint_evaluates_the_same(single_thread):
    ref = REFERENCE["best_pt_eval"]
    model = fr.load_model(FIXTURES / "pre_redesign_best.pt")
    curve = fr.robustness_curve(
        model,
        load_dataset("digits"),
        ref["norm"],
        ref["eps"],
        CurveSettings(steps=ref["steps"], restarts=ref["restarts"], seed=ref["seed"], checks=False),
    )
    assert curve.clean_accuracy == ref["clean_acc"]
    assert curve.accuracy == ref["adv_acc"]


def test_pre_redesign_run_folder_resumes_as_if_never_stopped(tmp_path, single_thread):
    """tests/fixtures/pre_redesign_run (or its twin for this CPU capability): 1 epoch written by the code at commit 7d69892 (before the
    trainer was split; tiny_mlp, constant lr, early stop on). Resumed here for a 2nd epoch, it
    must equal a 2-epoch run of today's code bitwise, and the Table I reader must read it."""
    import shutil

    from fastrobust.timing.runs_table import read_run

    old = shutil.copytree(PRE_REDESIGN_RUN, tmp_path / "old")
    before = read_run(old)
    assert (before.epochs_done, before.best_epoch, before.method) == (1, 1, "fast")
    resumed = fr.resume(old, epochs=2, import_factory=True)  # it names user_models:tiny_mlp
    recorded = load_checkpoint(old / "last.pt")
    # the old record (schema 1, no subsets) means legacy subsets; the resumed run records
    # them in today's schema, from which they are read back, but no user may choose them
    assert (
        fr.TrainConfig.from_recorded(yaml.safe_load((old / "config.yaml").read_text())).subsets
        == "legacy"
    )
    assert recorded["config"]["schema_version"] == SCHEMA_VERSION
    with pytest.raises(ConfigError, match="evaluation.subsets 'legacy' cannot be chosen"):
        fr.TrainConfig.from_dict(recorded["config"])
    cfg = fr.TrainConfig.from_recorded(recorded["config"])
    assert cfg.epochs == 2 and cfg.subsets == "legacy"
    cfg.out_dir, cfg.name = str(tmp_path), "fresh"
    fresh = fr.fit(cfg)
    want = load_checkpoint(fresh.run_dir / "last.pt")
    assert _weights_sha256(recorded["model"]) == _weights_sha256(want["model"])

    def rows(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [_without_times(json.loads(line)) for line in lines]

    assert rows(old) == rows(fresh.run_dir) and len(rows(old)) == 2
    assert resumed.best_epoch == fresh.best_epoch
