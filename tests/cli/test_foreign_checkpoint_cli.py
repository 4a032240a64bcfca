"""``eval`` and ``visualize`` on checkpoints trained elsewhere, and on a run's recorded data folder."""

import shutil

import pytest
import torch

from cifar_files import write_cifar10
from fastrobust.cli import main
from foreign_resnets import DataParallelKeys, RobustnessWrapper, TorchvisionStyleResNet

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture
def robustness_cifar_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = TorchvisionStyleResNet(18, 10, width=2, cifar=True)
    wrapper = RobustnessWrapper(net, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    path = tmp_path / "cifar_l2_0_5.pt"
    torch.save({"model": DataParallelKeys(wrapper).state_dict(), "epoch": 150}, path)
    return path


def test_eval_and_visualize_a_robustness_checkpoint(robustness_cifar_checkpoint, tmp_path, capsys):
    data = write_cifar10(tmp_path)
    ckpt = str(robustness_cifar_checkpoint)
    common = ["--data-dir", str(data), "--device", "cpu"]
    rc = main(
        ["eval", ckpt, "--data", "cifar10", "--arch", "resnet18", "--norm", "l2"]
        + ["--eps", "0,0.5", "--steps", "2", "--restarts", "1", "--limit", "8", "--no-progress"]
        + ["--no-checks", "--out", str(tmp_path / "ev"), *common]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert (
        "adversarial accuracy on cifar10" in out and (tmp_path / "ev" / "robustness.json").exists()
    )
    rc = main(
        ["visualize", "targeted", ckpt, "--dataset", "cifar10", "--targets", "1", "--steps", "2"]
        + ["--eps", "1", "--out", str(tmp_path / "vis"), *common]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert (tmp_path / "vis" / "images.npz").exists()


def test_a_checkpoint_that_does_not_fit_its_arch_is_one_line(robustness_cifar_checkpoint, capsys):
    rc = main(["eval", str(robustness_cifar_checkpoint), "--arch", "resnet50", "--data", "cifar10"])
    err = capsys.readouterr().err
    assert rc == 2 and "resnet18_cifar (width 2), not a resnet50" in err and "Traceback" not in err


def test_eval_reads_the_data_folder_the_run_recorded(tmp_path, capsys):
    data = write_cifar10(tmp_path / "somewhere")
    train = ["-q", "train", "--dataset", "cifar10", "--data-dir", str(data), "--epochs", "1"]
    train += ["--batch-size", "20", "--eval-steps", "1", "--overfit-check-size", "0"]
    train += ["--out-dir", str(tmp_path / "runs"), "--name", "r", "--no-progress"]
    assert main(train) == 0
    capsys.readouterr()
    run = str(tmp_path / "runs" / "r")
    args = ["eval", run, "--steps", "1", "--restarts", "1", "--limit", "4", "--no-progress"]
    args += ["--no-checks", "--out", str(tmp_path / "ev")]
    assert main(args) == 0  # no --data-dir: the folder recorded at training time
    shutil.move(str(tmp_path / "somewhere"), str(tmp_path / "elsewhere"))
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "no longer exists; give --data-dir" in err and str(data) in err
    moved = str(tmp_path / "elsewhere" / data.name)
    assert main(args + ["--data-dir", moved]) == 0
