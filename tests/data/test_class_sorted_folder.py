"""A user's own image folder, listed class by class: limited validation and ``eval --limit``
see every class in proportion (the same images for the same seed, others for another seed,
and the recorded subset reproduces the reported accuracy); image folders do not flip unless
asked to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fastrobust.checkpoint import load_model
from fastrobust.cli import main
from fastrobust.data import load_dataset, make_loader
from fastrobust.data.base import to_float
from fastrobust.data.subsets import stratified_subset

CLASSES = ["a", "b", "c"]
N_TRAIN, N_VAL = 8, 10  # per class; validation lists 10 of "a", then 10 of "b", then 10 of "c"


def _image(cls: int, i: int) -> np.ndarray:
    """8x8 grey noise with a bright bar in a class-dependent row (learnable, not trivial)."""
    rng = np.random.default_rng(1000 * cls + i)
    img = rng.integers(0, 120, (8, 8), dtype=np.uint8)
    img[2 * cls + 1, :] = 255
    return img


@pytest.fixture(scope="module")
def sorted_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sorted")
    for c, name in enumerate(CLASSES):
        for split, count, offset in (("train", N_TRAIN, 0), ("val", N_VAL, 100)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(_image(c, offset + i)).save(folder / f"{i:02d}.png")
    return root


def _train(folder: Path, out: Path, name: str, seed: int, *extra: str) -> Path:
    code = main(
        ["-q", "train", "--dataset", "imagefolder", "--data-dir", str(folder)]
        + ["--epochs", "1", "--batch-size", "8", "--workers", "0", "--eval-steps", "2"]
        + ["--eval-limit", "12", "--overfit-check-size", "6", "--seed", str(seed)]
        + ["--out-dir", str(out), "--name", name, "--no-progress", *extra]
    )
    assert code == 0
    return out / name


@pytest.fixture(scope="module")
def runs(sorted_folder, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    return {
        "seed0": _train(sorted_folder, out, "seed0", 0),
        "seed0_again": _train(sorted_folder, out, "seed0_again", 0),
        "seed1": _train(sorted_folder, out, "seed1", 1, "--flip"),
    }


def _validation(run: Path) -> dict:
    return json.loads((run / "subsets.json").read_text())["validation"]


def test_eval_limit_takes_every_class_in_proportion(runs):
    a, again, b = (_validation(runs[k]) for k in ("seed0", "seed0_again", "seed1"))
    # the first 12 would be 10 of "a" and 2 of "b"
    assert a["per_class"] == {"0": 4, "1": 4, "2": 4} == b["per_class"]
    assert a["indices"] == again["indices"]
    assert a["indices"] != b["indices"]
    summary = json.loads((runs["seed0"] / "summary.json").read_text())
    assert summary["subsets"]["validation"] == {k: v for k, v in a.items() if k != "indices"}
    labels = torch.arange(3).repeat_interleave(N_VAL)
    assert a["indices"] == stratified_subset(labels, 12, 0).tolist()
    check = json.loads((runs["seed0"] / "subsets.json").read_text())["overfit_check"]
    assert check["per_class"] == {"0": 2, "1": 2, "2": 2}


def test_validation_accuracy_recomputes_on_the_recorded_subset(runs, sorted_folder):
    run = runs["seed0"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    model = load_model(run / "last.pt")
    data = load_dataset("imagefolder", sorted_folder)
    idx = torch.tensor(_validation(run)["indices"])
    with torch.no_grad():
        pred = model(to_float(data.test_x[idx])).argmax(1)
    assert rows[-1]["val_clean_acc"] == int((pred == data.test_y[idx]).sum()) / len(idx)


def test_eval_limit_cli_is_stratified_and_seeded(runs, sorted_folder, tmp_path, capsys):
    def evaluate(seed: int, out: str) -> dict:
        code = main(
            ["-q", "eval", str(runs["seed0"]), "--data-dir", str(sorted_folder), "--limit", "9"]
            + ["--seed", str(seed), "--restarts", "1", "--steps", "2", "--no-checks"]
            + ["--no-progress", "--out", str(tmp_path / out)]
        )
        assert code == 0
        return json.loads((tmp_path / out / "robustness.json").read_text())

    a, again, b = evaluate(0, "a"), evaluate(0, "again"), evaluate(1, "b")
    assert "class-stratified sample of 9 of 30 test points (seed 0)" in capsys.readouterr().out
    assert a["data"]["sample"]["per_class"] == {"0": 3, "1": 3, "2": 3}
    assert a["data"]["sample"]["indices"] == again["data"]["sample"]["indices"]
    assert a["data"]["sample"]["indices"] != b["data"]["sample"]["indices"]
    assert b["data"]["sample"]["per_class"] == {"0": 3, "1": 3, "2": 3}


def test_imagefolder_flips_only_when_asked(runs, sorted_folder):
    assert yaml.safe_load((runs["seed0"] / "config.yaml").read_text())["data"]["flip"] is False
    assert yaml.safe_load((runs["seed1"] / "config.yaml").read_text())["data"]["flip"] is True
    # an asymmetric image: its mirror differs from it; without crops, only a flip can change it
    data = load_dataset("imagefolder", sorted_folder)
    originals = to_float(data.train_x[:])
    mirrored = originals.flip(3)
    assert not torch.equal(originals, mirrored)

    def seen(flip: bool | None) -> tuple[int, int]:
        loader = make_loader(data, 24, crop_padding=0, flip=flip, workers=0)
        same = flipped = 0
        for epoch in range(3):
            loader.set_epoch(epoch)
            for x, _labels in loader:
                for image in x:
                    match = (originals == image).flatten(1).all(1)
                    same += int(match.any())
                    flipped += int((mirrored == image).flatten(1).all(1).any() and not match.any())
        return same, flipped

    assert seen(None) == (72, 0)  # the dataset's default: no flip
    assert seen(False) == (72, 0)
    same, flipped = seen(True)
    assert same + flipped == 72 and 15 < flipped < 57  # about half, drawn per sample
