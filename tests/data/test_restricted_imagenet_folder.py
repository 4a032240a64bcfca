"""Restricted ImageNet from real JPEG folders in the ILSVRC2012 wnid layout, end to end."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastrobust.checkpoint import load_checkpoint
from fastrobust.cli import main
from fastrobust.data import load_dataset, make_loader
from fastrobust.data.imagefolder import decode_image

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

WNIDS = [f"n{i:08d}" for i in range(1000)]  # sorted, as the real ones
#: (wnid index, expected label): dog 151-268 -> 0, cat 281-285 -> 1, frog 30-32 -> 2
PRESENT = {151: 0, 268: 0, 281: 1, 30: 2, 500: None}  # 500: not a Restricted ImageNet class


def _photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 180
    img = base + rng.integers(0, 60, (height, width, 3))
    return Image.fromarray(img.astype(np.uint8))


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ilsvrc")
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    rng = np.random.default_rng(0)
    for index in PRESENT:
        for split, count in (("train", 4), ("val", 2)):
            folder = root / split / WNIDS[index]
            folder.mkdir(parents=True)
            for k in range(count):
                size = (100, 75) if k % 2 else (75, 100)  # landscape and portrait photos
                _photo(rng, *size).save(folder / f"{WNIDS[index]}_{k}.JPEG", quality=90)
    return root


def test_the_wnid_folders_map_to_the_nine_super_classes(imagenet_root):
    data = load_dataset("restricted_imagenet", imagenet_root, image_size=64)
    assert data.classes[:3] == ["dog", "cat", "frog"] and data.num_classes == 9
    assert sorted(data.train_y.tolist()) == [0] * 8 + [1] * 4 + [2] * 4  # n00000500 left out
    for path, label in zip(data.train_x.files, data.train_y.tolist()):
        assert PRESENT[WNIDS.index(path.parent.name)] == label
    assert len(data.test_y) == 8 and data.train_crop == "resized" and data.crop_padding == 0


def test_small_sizes_keep_pad_crop(imagenet_root):
    data = load_dataset("restricted_imagenet", imagenet_root, image_size=32)
    assert data.train_crop == "pad" and data.crop_padding == 4 and data.test_x.resize_ratio == 1


def _epoch_images(data, seed: int, epoch: int, workers: int = 0) -> torch.Tensor:
    loader = make_loader(data, 16, seed=seed, workers=workers, color_jitter=0.1, lighting=0.05)
    loader.set_epoch(epoch)
    (x, y), *_ = list(loader)
    order = list(iter(loader.sampler))
    return x[torch.tensor(order).argsort()]  # back in dataset order


def test_training_crops_differ_across_epochs_and_repeat_under_the_seed(imagenet_root):
    data = load_dataset("restricted_imagenet", imagenet_root, image_size=48)
    first = _epoch_images(data, seed=0, epoch=0)
    assert first.shape == (16, 3, 48, 48)
    assert torch.equal(first, _epoch_images(data, seed=0, epoch=0))
    assert torch.equal(first, _epoch_images(data, seed=0, epoch=0, workers=2))
    second = _epoch_images(data, seed=0, epoch=1)
    other_seed = _epoch_images(data, seed=1, epoch=0)
    for other in (second, other_seed):
        same = [torch.equal(a, b) for a, b in zip(first, other)]
        assert not any(same)


def test_evaluation_crops_are_deterministic_resize_256_224_centre(imagenet_root):
    data = load_dataset("restricted_imagenet", imagenet_root, image_size=64)
    a, b = data.test_x[:4], data.test_x[:4]
    assert torch.equal(a, b)
    path = data.test_x.files[1]
    with Image.open(path) as img:
        w, h = img.size
        short = round(64 * 256 / 224)  # 73
        scale = short / min(w, h)
        big = img.convert("RGB").resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        left, top = (big.width - 64) // 2, (big.height - 64) // 2
        expected = np.asarray(big.crop((left, top, left + 64, top + 64)))
    exact = decode_image(path, 64, 3, draft=False, resize_ratio=256 / 224)
    assert torch.equal(exact, torch.from_numpy(expected.copy()).permute(2, 0, 1))


def test_a_64_px_run_trains_evaluates_and_visualizes(imagenet_root, tmp_path, capsys):
    train = ["-q", "train", "--dataset", "restricted_imagenet", "--data-dir", str(imagenet_root)]
    train += ["--image-size", "64", "--model", "resnet18", "--epochs", "1", "--batch-size", "8"]
    train += ["--workers", "0", "--eval-steps", "1", "--overfit-check-size", "0"]
    train += ["--out-dir", str(tmp_path / "runs"), "--name", "ri64", "--no-progress"]
    assert main(train) == 0, capsys.readouterr().err
    run = tmp_path / "runs" / "ri64"
    state = load_checkpoint(run / "last.pt")
    assert state["model_spec"]["name"] == "resnet18_imagenet"  # the ImageNet stem at 64 px
    assert state["config"]["model"] == "resnet18_imagenet"
    capsys.readouterr()
    rc = main(
        ["eval", str(run), "--eps", "0,0.5", "--steps", "1", "--restarts", "1", "--no-checks"]
        + ["--no-progress", "--out", str(tmp_path / "ev")]
    )  # no --data-dir: the folder recorded by the run
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads((tmp_path / "ev" / "robustness.json").read_text())
    assert report["eps"] == [0, 0.5] and "restricted_imagenet" in out
    rc = main(
        ["visualize", "targeted", str(run), "--targets", "0", "--steps", "1", "--eps", "2"]
        + ["--out", str(tmp_path / "vis")]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert (tmp_path / "vis" / "images.npz").exists()
