import pytest
import torch

from fastrobust.errors import ConfigError
from fastrobust.models import MODELS, ModelSpec, build_model, count_parameters


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
