"""JPEG draft-mode decoding: DCT-domain downscaling before the resize, same picture."""

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from fastrobust.data.imagefolder import decode_image


def _smooth_photo(width: int, height: int) -> np.ndarray:
    """A smooth colour picture with some edges (what JPEG is made for)."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    r = 0.5 + 0.4 * np.sin(6 * x + 2 * y)
    g = 0.5 + 0.4 * np.cos(5 * y - 3 * x * y)
    b = np.where((x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.05, 0.9, 0.2)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_smooth_photo(400, 300)).save(path, quality=90)
    return path


@pytest.fixture
def draft_scales(monkeypatch):
    """The DCT scale factor of every draft call."""
    scales = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        width = self.size[0]
        result = original(self, mode, size)
        if result is not None:
            scales.append(round(width / result[1][2]))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return scales


@pytest.mark.parametrize("channels", [3, 1])
def test_draft_decoding_downscales_in_the_dct_and_keeps_the_picture(photo, draft_scales, channels):
    fast = decode_image(photo, 48, channels)
    assert draft_scales == [4]  # 300 px -> 75 px, still >= 48
    full = decode_image(photo, 48, channels, draft=False)
    assert draft_scales == [4]  # draft=False never asks for it
    assert fast.shape == full.shape == (channels, 48, 48) and fast.dtype == torch.uint8
    diff = (fast.float() - full.float()).abs()
    assert diff.mean() < 1.5 and diff.max() < 16


def test_no_draft_when_the_image_is_not_larger_or_not_a_jpeg(photo, tmp_path, draft_scales):
    assert decode_image(photo, 300, 3).shape == (3, 300, 300)
    png = tmp_path / "photo.png"
    Image.fromarray(_smooth_photo(400, 300)).save(png)
    assert decode_image(png, 48, 3).shape == (3, 48, 48)
    assert draft_scales == []
