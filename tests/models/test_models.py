import pytest
import torch

from fastrobust.errors import ConfigError
from fastrobust.models import MODELS, ModelSpec, build_model, count_parameters
from fastrobust.models.resnet import resnet, resolve_stem


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_models_take_01_images_and_give_logits(name):
    spec = ModelSpec(name, 7, 3, 32, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    model = build_model(spec).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.equal(model.mean.flatten(), torch.tensor([0.5, 0.4, 0.3]))


def test_resnet50_has_the_papers_size():
    n = count_parameters(build_model(ModelSpec("resnet50", 10, 3, 32)))
    assert 23.0e6 < n < 24.0e6


def test_normalisation_is_inside_the_model():
    torch.manual_seed(0)
    a = build_model(ModelSpec("small_cnn", 10, 1, 8, [0.0], [1.0])).eval()
    b = build_model(ModelSpec("small_cnn", 10, 1, 8, [0.5], [0.25])).eval()
    b.net.load_state_dict(a.net.state_dict())
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(b(x), a((x - 0.5) / 0.25), atol=1e-5)


def test_unknown_model_lists_the_choices():
    with pytest.raises(ConfigError, match="resnet50"):
        build_model(ModelSpec("resnet9000", 10, 3, 32))


def test_registering_a_taken_name_warns(caplog):
    from fastrobust.models import register_model

    original = MODELS["small_cnn"]
    try:
        register_model("small_cnn")(lambda **kw: torch.nn.Identity())
        assert "registered twice" in caplog.text
    finally:
        MODELS["small_cnn"] = original


def test_error_inside_a_user_factory_is_not_hidden(monkeypatch):
    import types

    def factory(num_classes, in_channels, image_size):
        raise TypeError("bug inside the factory")

    module = types.ModuleType("broken_models")
    module.factory = factory
    monkeypatch.setitem(__import__("sys").modules, "broken_models", module)
    with pytest.raises(TypeError, match="bug inside the factory"):
        build_model(ModelSpec("broken_models:factory", 10, 1, 8), import_factory=True)


def test_user_factory_gets_only_the_arguments_it_takes(monkeypatch):
    import types

    module = types.ModuleType("few_args")
    module.factory = lambda num_classes: torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.LazyLinear(num_classes)
    )
    monkeypatch.setitem(__import__("sys").modules, "few_args", module)
    model = build_model(ModelSpec("few_args:factory", 5, 1, 8), import_factory=True)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 5)


def test_restricted_imagenet_resnet50_has_the_papers_size():
    # 9 classes at 224 px with the ImageNet stem; counted without a forward pass
    n = count_parameters(build_model(ModelSpec("resnet50_imagenet", 9, 3, 224)))
    assert n == 23_526_473  # ~23.5M, as in Goodwin et al. (HPEC 2020)


def test_imagenet_stem_downsamples_4x_before_the_first_stage():
    net = resnet(18, stem="imagenet", num_classes=3, width=4).eval()
    seen = {}

    def record(module, inputs, output):
        seen["shape"] = output.shape

    net.layers[0].register_forward_hook(record)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 3)
    assert seen["shape"][-2:] == (16, 16)
    assert net.conv1.kernel_size == (7, 7) and isinstance(net.stem_pool, torch.nn.MaxPool2d)


def test_old_names_keep_the_cifar_stem_and_their_keys():
    old = build_model(ModelSpec("resnet18", 10, 3, 32))
    assert old.net.conv1.kernel_size == (3, 3) and old.net.stem == "cifar"
    explicit = build_model(ModelSpec("resnet18_cifar", 10, 3, 32))
    assert list(old.state_dict()) == list(explicit.state_dict())
    explicit.load_state_dict(old.state_dict())  # a checkpoint named resnet18 loads as before


@pytest.mark.parametrize(
    "name,size,expected",
    [
        ("resnet50", 224, "resnet50_imagenet"),
        ("resnet50", 64, "resnet50_imagenet"),
        ("resnet50", 32, "resnet50"),  # the CIFAR stem, as in checkpoints of earlier runs
        ("resnet18", 63, "resnet18"),
        ("resnet18_cifar", 224, "resnet18_cifar"),
        ("resnet50_imagenet", 32, "resnet50_imagenet"),
        ("small_cnn", 224, "small_cnn"),
    ],
)
def test_the_stem_is_chosen_by_image_size_unless_named(name, size, expected):
    assert resolve_stem(name, size) == expected
