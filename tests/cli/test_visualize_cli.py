"""``fastrobust visualize``: grid + raw images + JSON per tool; one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from fastrobust.cli import main
from fastrobust.training.trainer import fit


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two small_cnn run folders trained 1 epoch on digits (standard and fast)."""
    root = tmp_path_factory.mktemp("vis-runs")
    return [
        fit(tiny_config(root, method=m, name=m, epochs=1)).run_dir for m in ("standard", "fast")
    ]


def visualize(*args: object) -> int:
    return main(["-q", "visualize", *map(str, args)])


def load_outputs(out: Path) -> tuple[np.ndarray, dict]:
    assert (out / "grid.png").stat().st_size > 1000
    with np.load(out / "images.npz") as z:
        images = z["images"]
        assert z["starts"].shape == images.shape
        assert z["model_index"].shape == (images.shape[0],)
    meta = json.loads((out / "images.json").read_text())
    assert images.dtype == np.float32 and images.ndim == 4
    assert images.min() >= 0 and images.max() <= 1
    assert len(meta["images"]) == images.shape[0]
    return images, meta


def test_targeted_writes_grid_tensors_and_json(runs, tmp_path, capsys):
    out = tmp_path / "t"
    assert visualize("targeted", *runs, "--steps", 8, "--targets", 3, 7, "--out", out) == 0
    images, meta = load_outputs(out)
    assert images.shape == (4, 1, 8, 8)  # 2 models x 2 targets
    assert [m["label"] for m in meta["models"]] == ["standard", "fast l2 eps=1"]
    first = meta["images"][0]
    assert first["target"] == 3 and first["source_label"] != 3
    assert first["target_prob_after"] > first["target_prob_before"]
    assert first["perturbation_norm"] <= meta["eps"] * (1 + 1e-5)
    assert meta["steps"] == 8 and meta["eps"] == 4.0
    printed = capsys.readouterr().out
    assert "standard: target probability" in printed and "grid.png" in printed


def test_features_and_interpolate(runs, tmp_path):
    out = tmp_path / "f"
    args = ("features", *runs, "--steps", 5, "--nodes", 3, "--num-seeds", 2, "--out", out)
    assert visualize(*args) == 0
    images, meta = load_outputs(out)
    assert images.shape == (12, 1, 8, 8)  # 2 models x 2 seeds x 3 nodes
    assert meta["layer"] == "net.8 (input)"
    rec = meta["images"][0]
    assert {"node", "activation_before", "activation_after", "seed", "model"} <= set(rec)
    assert rec["activation_after"] >= rec["activation_before"]

    out = tmp_path / "i"
    args = ("interpolate", *runs, "--steps", 5, "--pairs", 2, "--lambdas", 0.5, "--out", out)
    assert visualize(*args) == 0
    images, meta = load_outputs(out)
    assert images.shape == (4, 1, 8, 8)
    rec = meta["images"][0]
    assert rec["lam"] == 0.5 and rec["distance_after"] < rec["distance_before"]


def test_explicit_nodes_named_layer_and_test_seeds(runs, tmp_path):
    out = tmp_path / "l"
    args = ("features", runs[0], "--layer", "2", "--node", 0, 5, "--seed-image", "test")
    assert visualize(*args, "--steps", 3, "--out", out) == 0
    _, meta = load_outputs(out)
    assert meta["layer"] == "net.2"
    assert [r["node"] for r in meta["images"]] == [0, 5]
    assert meta["images"][0]["seed"].startswith("test image ")


def test_seed_makes_outputs_reproducible(runs, tmp_path):
    outs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / name
        assert visualize("interpolate", runs[1], "--steps", 3, "--seed", seed, "--out", out) == 0
        outs.append(load_outputs(out)[0])
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_images_file_as_sources(runs, tmp_path):
    src = tmp_path / "mine.npz"
    np.savez(src, images=np.random.default_rng(0).integers(0, 256, (3, 1, 8, 8), dtype=np.uint8))
    out = tmp_path / "o"
    assert visualize("targeted", runs[1], "--images", src, "--steps", 3, "--out", out) == 0
    _, meta = load_outputs(out)
    assert [r["target"] for r in meta["images"]] == [0, 1, 2]


def one_line_error(capsys, *args: object) -> str:
    try:
        code = visualize(*args)
    except SystemExit as exc:  # argparse's own errors exit instead of returning
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_exit_2(runs, tmp_path, capsys):
    run = runs[0]
    err = one_line_error(capsys, "features", run, "--layer", "nope", "--steps", 1)
    assert "no layer 'nope'; valid layers:" in err and "net.8" in err
    err = one_line_error(capsys, "features", run, "--node", 128, "--steps", 1)
    assert "node 128 is out of range" in err and "128 nodes (0 to 127)" in err
    err = one_line_error(capsys, "targeted", run, "--targets", 10, "--steps", 1)
    assert "target class 10 is out of range" in err
    bad = tmp_path / "bad.pt"
    torch.save({"images": torch.rand(2, 3, 8, 8)}, bad)
    err = one_line_error(capsys, "targeted", run, "--images", bad, "--steps", 1)
    assert "of shape 3x8x8 do not fit the model: it takes 1x8x8 images" in err
    np.savez(tmp_path / "flat.npz", images=np.zeros((2, 64), dtype=np.float32))
    err = one_line_error(capsys, "targeted", run, "--images", tmp_path / "flat.npz")
    assert "N x C x H x W" in err
    err = one_line_error(capsys, "targeted", tmp_path / "missing")
    assert "does not exist" in err
    assert one_line_error(capsys, "draw", run).startswith("fastrobust")
    err = one_line_error(capsys, "interpolate", run, "--layer", "net.99", "--steps", 1)
    assert "no layer 'net.99'" in err
