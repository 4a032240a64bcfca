"""``fastrobust export`` (issue 22): the exported folder loads and gives bitwise the logits of
the run's best.pt; model.safetensors holds tensors only (its header read by hand and by
safetensors); the model card's and the RobustBench entry's numbers are the evaluation's; a
foreign checkpoint exports too; mistakes are one line with nothing written."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from fastrobust import load_model
from fastrobust.cli import main
from fastrobust.data import load_dataset
from fastrobust.data.base import to_float
from fastrobust.model_info import model_info
from foreign_resnets import DataParallelKeys, RobustnessWrapper, TorchvisionStyleResNet

pytestmark = pytest.mark.usefixtures("one_thread")

PAPER = ["--title", "Fast Training of Deep Neural Networks Robust to Adversarial Perturbations"]
PAPER += ["--authors", "Justin Goodwin, Olivia Brown, Victoria Helus"]
PAPER += ["--link", "https://arxiv.org/abs/2007.03832", "--venue", "HPEC 2020"]


def _header(path: Path) -> dict:
    """The safetensors header, read from the file format itself (8-byte length + JSON)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + size])


def _test_images(n: int = 64) -> torch.Tensor:
    return to_float(load_dataset("digits").test_x[:n])


def test_export_round_trips_bitwise_and_holds_tensors_only(one_epoch_run, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", str(one_epoch_run), "--out", str(out)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    x = _test_images()
    with torch.no_grad():
        original = load_model(one_epoch_run / "best.pt")(x)
        exported = load_model(out)
        assert torch.equal(exported(x), original)  # bitwise
    assert model_info(exported).spec == model_info(load_model(one_epoch_run)).spec

    header = _header(out / "model.safetensors")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert all(set(v) == {"dtype", "shape", "data_offsets"} for v in tensors.values())
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    assert set(weights) == set(tensors) == set(exported.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in weights.values())

    from fastrobust.exported import build_exported  # the card's plain-safetensors recipe

    plain = build_exported(json.loads((out / "config.json").read_text()))
    plain.load_state_dict(weights)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), original)

    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "small_cnn" and config["fastrobust_version"]
    assert config["threat_model"] == {"norm": "l2", "eps": 1.0}
    assert config["training"]["method"] == "fast" and len(config["classes"]) == 10
    summary = json.loads((one_epoch_run / "summary.json").read_text())
    card = (out / "README.md").read_text()
    assert f"| {summary['best_test_clean_acc']:.4f} | {summary['best_test_adv_acc']:.4f} |" in card
    assert "fastrobust.load_model(" in card and "fastrobust train --config" in card


def test_an_existing_export_needs_force(one_epoch_run, tmp_path, capsys):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["export", str(one_epoch_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fastrobust: error: --out {out} already exists; give --force to replace it"]
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert main(["export", str(one_epoch_run), "--out", str(out), "--force"]) == 0
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]  # no temporary folder left


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--robustbench", "fast_model", *PAPER], "--robustbench 'fast_model' breaks RobustBench"),
        (["--robustbench", "Goodwin20Fast", *PAPER], "naming rule"),
        (["--robustbench", "Goodwin2020Fast"], "--robustbench needs --title"),
        (["--robustbench", "Goodwin2020Fast", *PAPER[:4], "--link", "arxiv", *PAPER[6:]], "--link"),
    ],
)
def test_robustbench_mistakes_are_one_line_with_nothing_written(
    one_epoch_run, tmp_path, capsys, argv, words
):
    code = main(["export", str(one_epoch_run), "--out", str(tmp_path / "exp"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert list(tmp_path.iterdir()) == []


def _autoattack_report(path: Path, *, limit=None, n=360, clean=0.5, robust=0.25) -> Path:
    """A robustness.json as ``fastrobust eval --attack autoattack`` writes it (its fields)."""
    curve = {"norm": "l2", "eps": [1.0], "accuracy": [robust], "clean_accuracy": clean, "n": n}
    curve["version"] = "autoattack"
    doc = {"settings": {"limit": limit}, "models": {"fast": curve}}
    path.mkdir()
    (path / "robustness.json").write_text(json.dumps(doc))
    return path


def test_robustbench_entry_reuses_an_autoattack_evaluation(one_epoch_run, tmp_path, capsys):
    report = _autoattack_report(tmp_path / "aa", clean=0.5, robust=0.2536)
    out = tmp_path / "exp"
    argv = ["export", str(one_epoch_run), "--out", str(out), "--robustbench", "Goodwin2020Fast"]
    assert main([*argv, *PAPER, "--evaluation", str(report)]) == 0, capsys.readouterr().err
    entry = json.loads((out / "robustbench" / "digits" / "L2" / "Goodwin2020Fast.json").read_text())
    assert list(entry) == [
        "link", "name", "authors", "additional_data", "number_forward_passes", "dataset",
        "venue", "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "unreliable",
    ]  # fmt: skip
    assert entry["clean_acc"] == "50.00" and entry["autoattack_acc"] == "25.36"
    assert entry["eps"] == "1" and entry["name"] == PAPER[1] and entry["venue"] == "HPEC 2020"
    assert entry["additional_data"] is False and entry["number_forward_passes"] == 1
    card = (out / "README.md").read_text()
    assert "| 360 | 0.5000 | 0.2536 |" in card
    assert json.loads((out / "autoattack" / "robustness.json").read_text())["models"]


def test_a_partial_evaluation_is_not_reused(one_epoch_run, tmp_path, capsys):
    report = _autoattack_report(tmp_path / "aa", limit=100)
    argv = ["export", str(one_epoch_run), "--out", str(tmp_path / "exp")]
    argv += ["--robustbench", "Goodwin2020Fast", *PAPER, "--evaluation", str(report)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "100 test points, not the whole test set" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aa"]  # nothing half-written


def test_a_madrylab_robustness_checkpoint_exports_to_safetensors(tmp_path, capsys):
    torch.manual_seed(0)
    net = TorchvisionStyleResNet(18, 10, width=2, cifar=True)
    wrapper = RobustnessWrapper(net, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    ckpt = tmp_path / "cifar_l2_0_5.pt"
    torch.save({"model": DataParallelKeys(wrapper).state_dict(), "epoch": 150}, ckpt)
    out = tmp_path / "exp"
    code = main(["export", str(ckpt), "--dataset", "cifar10", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(load_model(out)(x), load_model(ckpt, dataset="cifar10")(x))
        assert torch.allclose(load_model(out)(x), wrapper.eval()(x), atol=1e-5)  # the original
    config = json.loads((out / "config.json").read_text())
    assert config["resnet"] == {"depth": 18, "stem": "cifar", "width": 2}
    assert config["source"]["layout"].startswith("foreign")


@pytest.mark.slow  # AutoAttack (standard) on the 360 digits test images: minutes on a busy CPU
def test_robustbench_runs_autoattack_on_the_whole_test_set(one_epoch_run, tmp_path, capsys):
    out = tmp_path / "exp"
    argv = ["export", str(one_epoch_run), "--out", str(out), "--robustbench", "Goodwin2020Fast"]
    assert main([*argv, *PAPER, "--no-progress"]) == 0, capsys.readouterr().err
    report = json.loads((out / "autoattack" / "robustness.json").read_text())
    (curve,) = report["models"].values()
    assert curve["version"] == "autoattack" and curve["n"] == 360  # the whole test set
    entry = json.loads((out / "robustbench" / "digits" / "L2" / "Goodwin2020Fast.json").read_text())
    assert entry["clean_acc"] == f"{100 * curve['clean_accuracy']:.2f}"
    assert entry["autoattack_acc"] == f"{100 * curve['accuracy'][0]:.2f}"
    card = (out / "README.md").read_text()
    row = f"| 360 | {curve['clean_accuracy']:.4f} | {curve['accuracy'][0]:.4f} |"
    assert row in card and "--attack autoattack" in card
