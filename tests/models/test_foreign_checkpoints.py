"""MadryLab robustness and torchvision-layout ResNet checkpoints load as fastrobust models."""

import pytest
import torch

from fastrobust.checkpoint import load_model
from fastrobust.data.cifar import CIFAR10_MEAN
from fastrobust.errors import CheckpointError
from fastrobust.model_info import model_info
from fastrobust.models import NormalizedModel
from fastrobust.models.foreign import detect_layout, infer_shape, load_foreign_model
from fastrobust.models.resnet import resnet
from foreign_resnets import (
    DataParallelKeys,
    RobustnessWrapper,
    TorchvisionStyleResNet,
    randomise_batchnorm,
)

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def _robustness_checkpoint(tmp_path, *, cifar: bool, depth: int = 50, classes: int = 9):
    torch.manual_seed(1)
    net = TorchvisionStyleResNet(depth, classes, width=4, cifar=cifar)
    randomise_batchnorm(net)
    wrapper = RobustnessWrapper(net, MEAN, STD).eval()
    state = DataParallelKeys(wrapper).state_dict()
    path = tmp_path / "robust.pt"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 90}, path)
    return path, wrapper, state


@pytest.mark.parametrize("cifar,size", [(False, 64), (True, 32)], ids=["imagenet", "cifar"])
def test_robustness_checkpoint_predicts_the_same(tmp_path, cifar, size):
    path, wrapper, state = _robustness_checkpoint(tmp_path, cifar=cifar)
    head = "linear" if cifar else "fc"
    for key in (
        "module.normalizer.new_mean",
        "module.attacker.normalize.new_std",
        "module.model.layer1.0.conv3.weight",
        f"module.attacker.model.{head}.weight",
        "module.model.layer2.0." + ("shortcut" if cifar else "downsample") + ".0.weight",
    ):
        assert key in state  # the real robustness key names
    model, shape, foreign = load_foreign_model(path, arch="resnet50")
    assert foreign.layout == "robustness"
    assert (shape.depth, shape.stem, shape.width, shape.num_classes) == (
        50,
        "cifar" if cifar else "imagenet",
        4,
        9,
    )
    assert isinstance(model, NormalizedModel) and not model.training
    assert model.mean.flatten().tolist() == pytest.approx(MEAN)
    assert model.std.flatten().tolist() == pytest.approx(STD)
    x = torch.rand(3, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(model(x), wrapper(x), atol=1e-5)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_torchvision_state_dict_predicts_the_same(tmp_path, prefix):
    torch.manual_seed(2)
    net = TorchvisionStyleResNet(18, 5, width=4).eval()
    randomise_batchnorm(net, seed=3)
    state = {prefix + k: v for k, v in net.state_dict().items()}
    assert "layer3.0.downsample.1.running_var" in net.state_dict() and prefix + "fc.bias" in state
    torch.save(state, tmp_path / "tv.pth")
    model, shape, foreign = load_foreign_model(tmp_path / "tv.pth", mean=MEAN, std=STD)
    assert foreign.layout == "torchvision" and shape.name == "resnet18_imagenet"
    x = torch.rand(2, 3, 64, 64)
    expected = net((x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None])
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_torchvision_state_dict_defaults_to_imagenet_normalisation(tmp_path):
    torch.save(TorchvisionStyleResNet(18, 3, width=2).state_dict(), tmp_path / "tv.pth")
    model, _, _ = load_foreign_model(tmp_path / "tv.pth")
    assert model.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])


def test_mismatched_keys_are_named_in_one_line(tmp_path):
    path, _, state = _robustness_checkpoint(tmp_path, cifar=False)
    del state["module.model.layer4.2.bn3.weight"]
    state["module.model.layer4.2.extra.weight"] = torch.zeros(1)
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_foreign_model(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing: layers.3.2.bn3.weight" in msg
    assert "unexpected: layers.3.2.extra.weight" in msg


def test_wrong_arch_and_non_resnets_are_refused(tmp_path):
    path, _, _ = _robustness_checkpoint(tmp_path, cifar=False)
    with pytest.raises(CheckpointError, match="resnet50_imagenet .*not a resnet18"):
        load_foreign_model(path, arch="resnet18")
    with pytest.raises(CheckpointError, match="resnet50_imagenet .*not a resnet50_cifar"):
        load_foreign_model(path, arch="resnet50_cifar")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a ResNet state dict"):
        load_foreign_model(tmp_path / "other.pt")


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_code_carrying_files_are_not_unpickled(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_foreign_model(path)
    assert "must never run" not in capsys.readouterr().out


def test_layout_detection_and_full_width_shape():
    state = resnet(50, stem="imagenet", num_classes=9).state_dict()
    shape = infer_shape(state)
    assert shape.name == "resnet50_imagenet" and shape.registered
    assert detect_layout({"model": {"module.normalizer.new_mean": torch.zeros(3)}}) == "robustness"
    assert detect_layout({"conv1.weight": torch.zeros(1)}) == "torchvision"


def test_load_model_reads_a_robustness_checkpoint_with_its_dataset(tmp_path):
    path, wrapper, _ = _robustness_checkpoint(tmp_path, cifar=False)
    model = load_model(path, arch="resnet50", dataset="restricted_imagenet")
    info = model_info(model)
    assert info.spec.name == "resnet50_imagenet" and info.spec.image_size == 224
    assert info.classes[:3] == ("dog", "cat", "frog") and info.dataset == "restricted_imagenet"
    assert info.spec.mean == pytest.approx(MEAN)  # the checkpoint's normaliser wins
    assert info.method is None and not model.training
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), wrapper(x), atol=1e-5)


def test_load_model_takes_a_torchvision_state_dict_normalised_for_its_dataset(tmp_path):
    torch.save(TorchvisionStyleResNet(18, 10, width=2, cifar=False).state_dict(), tmp_path / "t.pt")
    info = model_info(load_model(tmp_path / "t.pt", dataset="cifar10"))
    assert info.spec.image_size == 32 and info.spec.mean == pytest.approx(CIFAR10_MEAN)
    with pytest.raises(CheckpointError, match="10 outputs, restricted_imagenet has 9 classes"):
        load_model(tmp_path / "t.pt", dataset="restricted_imagenet")
