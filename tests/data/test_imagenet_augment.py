"""ImageNet-style augmentation: random-resized crop boxes, the decoded crop, colour and lighting."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from fastrobust.data.imagenet_augment import (
    RATIO,
    ResizedCropOptions,
    augment_file,
    crop_box,
    decode_resized_crop,
    jitter_colors,
    lighting_noise,
    sample_seeds,
)
from fastrobust.seeding import generator


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:300, 0:400]
    img = np.stack([x / 400, y / 300, (x + y) / 700], axis=-1) * 200 + rng.integers(
        0, 40, (300, 400, 3)
    )
    path = tmp_path / "photo.jpg"
    Image.fromarray(img.astype(np.uint8)).save(path, quality=90)
    return path


@pytest.mark.parametrize("width,height", [(400, 300), (300, 400), (64, 64), (1000, 40)])
def test_crop_boxes_lie_inside_with_the_allowed_area_and_aspect(width, height):
    g = generator(0)
    for _ in range(200):
        left, top, w, h = crop_box(width, height, g)
        assert 0 <= left and left + w <= width and 0 <= top and top + h <= height
        if (width, height) != (1000, 40):  # a strip this thin always takes the fallback
            assert 0.08 * 0.9 <= w * h / (width * height) <= 1.0
        assert RATIO[0] * 0.9 <= w / h <= RATIO[1] * 1.1


def test_thin_strips_fall_back_to_the_largest_central_box():
    assert crop_box(1000, 40, generator(0)) == (473, 0, 53, 40)  # 40 * 4/3 = 53 px wide


def test_the_crop_is_the_box_of_the_original_resized(photo):
    x, box = decode_resized_crop(photo, 32, 3, generator(5), draft=False)
    left, top, w, h = box
    with Image.open(photo) as img:
        expected = img.convert("RGB").resize(
            (32, 32), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h)
        )
    assert torch.equal(x, torch.from_numpy(np.asarray(expected).copy()).permute(2, 0, 1))
    fast, same_box = decode_resized_crop(photo, 32, 3, generator(5))
    assert same_box == box
    assert (fast.float() - x.float()).abs().mean() < 4  # draft decoding: the same picture


def test_same_seed_same_view_other_seed_other_view(photo):
    options = ResizedCropOptions(color_jitter=0.1, lighting=0.05)
    a = augment_file(photo, 48, 3, 11, options)
    assert torch.equal(a, augment_file(photo, 48, 3, 11, options))
    assert not torch.equal(a, augment_file(photo, 48, 3, 12, options))
    assert a.shape == (3, 48, 48) and a.dtype == torch.uint8


def test_epochs_get_different_seeds_and_runs_the_same():
    assert torch.equal(sample_seeds(50, 0, 3), sample_seeds(50, 0, 3))
    assert not torch.equal(sample_seeds(50, 0, 3), sample_seeds(50, 0, 4))
    assert not torch.equal(sample_seeds(50, 0, 3), sample_seeds(50, 1, 3))


def test_colour_jitter_and_lighting_are_bounded_and_off_at_zero():
    x = torch.rand(3, 8, 8)
    assert torch.allclose(jitter_colors(x, 0.0, generator(0)), x, atol=1e-6)
    assert torch.allclose(lighting_noise(x, 0.0, generator(0)), x)
    jittered = jitter_colors(x, 0.1, generator(0))
    lit = lighting_noise(x, 0.05, generator(0))
    for y in (jittered, lit):
        assert not torch.equal(y, x) and y.min() >= 0 and y.max() <= 1
    # lighting shifts every pixel of a channel by the same amount (away from the clamp)
    mid = torch.full((3, 4, 4), 0.5)
    shift = lighting_noise(mid, 0.05, generator(1)) - mid
    assert torch.allclose(shift, shift[:, :1, :1].expand_as(shift))
    assert shift.abs().max() < 0.05 * 4 * 0.2175 * math.sqrt(3)
