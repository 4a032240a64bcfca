"""Disk image datasets (imagefolder, restricted_imagenet), LazyImages and the DiskLoader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastrobust.cli import main
from fastrobust.data import DiskLoader, InMemoryLoader, LazyImages, load_dataset, make_loader
from fastrobust.data.base import to_float
from fastrobust.data.imagefolder import RESTRICTED_IMAGENET_RANGES
from fastrobust.errors import ConfigError, DataError

CLASSES = ["ant", "bee", "cat"]


def _pixels(cls: int, i: int, size: int = 12) -> np.ndarray:
    rng = np.random.default_rng(100 * cls + i)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_folder(root: Path, n: int = 6, n_val: int = 2, size: int = 12, split: str = "val"):
    """ROOT/train/<cls>/<i>.png (n per class) and ROOT/<split>/<cls>/<i>.png (n_val)."""
    for c, name in enumerate(CLASSES):
        for part, count, off in (("train", n, 0), (split, n_val, 50)):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(_pixels(c, off + i, size)).save(folder / f"{i:02d}.png")
    return root


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "data")


def test_imagefolder_shapes_labels_and_pixels(folder):
    ds = load_dataset("imagefolder", folder)
    assert ds.classes == CLASSES and ds.num_classes == 3
    assert isinstance(ds.train_x, LazyImages)
    assert ds.train_x.shape == (18, 3, 12, 12) and ds.test_x.shape == (6, 3, 12, 12)
    assert ds.train_x.dtype == torch.uint8 and ds.image_shape == (3, 12, 12)
    assert ds.train_y.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert ds.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    x7 = ds.train_x[7]  # class 1, image 1
    assert torch.equal(x7, torch.from_numpy(_pixels(1, 1)).permute(2, 0, 1))
    f = to_float(ds.test_x[:])
    assert f.shape == (6, 3, 12, 12) and 0 <= f.min() and f.max() <= 1
    assert torch.allclose(f[3], torch.from_numpy(_pixels(1, 51)).permute(2, 0, 1) / 255.0)
    assert ds.crop_padding == 1 and not ds.flip  # image folders: no flip by default
    assert len(ds.mean) == 3 and all(0.3 < m < 0.7 for m in ds.mean)


def test_lazy_indexing_slices_and_index_tensors(folder):
    ds = load_dataset("imagefolder", folder)
    x = ds.train_x
    full = x[:]
    assert full.shape == (18, 3, 12, 12) and full.dtype == torch.uint8
    assert torch.equal(x[2:5], full[2:5]) and torch.equal(x[::4], full[::4])
    idx = torch.tensor([17, 0, 5])
    assert torch.equal(x[idx], full[idx]) and torch.equal(x[[3, 3]], full[[3, 3]])
    assert torch.equal(x[torch.tensor(4)], full[4])
    assert x[5:5].shape == (0, 3, 12, 12)
    x_tr, y_tr = ds.split("train")
    assert x_tr is x and len(y_tr) == 18


def test_imagefolder_test_split_and_resize(tmp_path):
    root = write_folder(tmp_path / "d", split="test", size=20)
    ds = load_dataset("imagefolder", root, image_size=8)
    assert ds.test_x.shape == (6, 3, 8, 8) and ds.train_x[0].shape == (3, 8, 8)
    # a non-square image: shorter side resized, centre kept
    (root / "train" / "ant" / "wide.jpg").parent.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(root / "train" / "ant" / "wide.jpg")
    ds = load_dataset("imagefolder", root, image_size=8)
    assert len(ds.train_y) == 19 and ds.train_x[:].shape == (19, 3, 8, 8)


def test_restricted_imagenet_label_mapping(tmp_path):
    root = tmp_path / "imagenet"
    wnids = [f"n{i:08d}" for i in range(1000)]
    (tmp_path / "imagenet").mkdir()
    (root / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # sorted on reading
    present = {151: 0, 268: 0, 281: 1, 30: 2, 37: 3, 80: 4, 382: 5, 389: 6, 121: 7, 319: 8}
    outside = [0, 29, 150, 269, 999]
    for i in [*present, *outside]:
        for part in ("train", "val"):
            d = root / part / wnids[i]
            d.mkdir(parents=True)
            Image.fromarray(np.full((6, 6, 3), i % 256, np.uint8)).save(d / f"x_{i}.JPEG")
    ds = load_dataset("restricted_imagenet", root, image_size=4)
    assert ds.classes == [name for name, _, _ in RESTRICTED_IMAGENET_RANGES]
    assert ds.classes[:3] == ["dog", "cat", "frog"] and ds.num_classes == 9
    assert ds.mean == [0.485, 0.456, 0.406] and ds.std == [0.229, 0.224, 0.225]
    assert len(ds.train_y) == len(present) and len(ds.test_y) == len(present)
    got = {int(ds.train_x.files[k].parent.name[1:]): int(y) for k, y in enumerate(ds.train_y)}
    assert got == present  # images outside the ranges are left out
    assert ds.train_x.shape[1:] == (3, 4, 4)
    # without a wnid list the 1000 classes cannot be indexed
    (root / "wnids.txt").unlink()
    with pytest.raises(DataError, match="1000"):
        load_dataset("restricted_imagenet", root)


def test_restricted_imagenet_default_size(tmp_path):
    root = tmp_path / "imagenet"
    wnids = [f"n{i:08d}" for i in range(1000)]
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids))
    for part in ("train", "val"):
        d = root / part / wnids[200]
        d.mkdir(parents=True)
        Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(d / "a.JPEG")
    ds = load_dataset("restricted_imagenet", root)
    assert ds.image_shape == (3, 224, 224) and ds.train_y.tolist() == [0]
    assert ds.train_x[0].shape == (3, 224, 224)


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match="data_dir"):
        load_dataset("imagefolder", None)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("imagefolder", tmp_path / "nope")
    (tmp_path / "a" / "train" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="val/"):
        load_dataset("imagefolder", tmp_path / "a")
    (tmp_path / "a" / "val" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="at least 2"):
        load_dataset("imagefolder", tmp_path / "a")
    (tmp_path / "a" / "train" / "y").mkdir()
    with pytest.raises(DataError, match="no .png"):
        load_dataset("imagefolder", tmp_path / "a")
    root = write_folder(tmp_path / "b")
    bad = root / "train" / "bee" / "03.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image .*03.png"):
        load_dataset("imagefolder", root)
    with pytest.raises(ConfigError, match="does not take"):
        load_dataset("digits", None, crop_size=16)


def _ids_loader(folder, **kw):
    """A DiskLoader whose labels are the sample indices (to see which samples each batch has)."""
    ds = load_dataset("imagefolder", folder)
    return DiskLoader(ds.train_x, torch.arange(18), crop_padding=1, flip=True, seed=3, **kw)


def test_disk_loader_covers_the_data_deterministically(folder):
    loader = _ids_loader(folder, batch_size=4, workers=0)
    assert len(loader) == 5
    loader.set_epoch(1)
    first = list(loader)
    ys = torch.cat([y for _, y in first])
    assert sorted(ys.tolist()) == list(range(18))
    x, _ = first[0]
    assert x.dtype == torch.float32 and x.shape == (4, 3, 12, 12) and 0 <= x.min() <= x.max() <= 1
    loader.set_epoch(1)
    again = list(loader)
    for (xa, ya), (xb, yb) in zip(first, again, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    loader.set_epoch(2)
    assert not torch.equal(torch.cat([y for _, y in loader]), ys)


def test_disk_loader_names_the_samples_of_each_batch(folder):
    loader = _ids_loader(folder, batch_size=4, workers=0, rank=1, world_size=2)
    loader.set_epoch(3)
    for _, y in loader:  # the labels are the sample indices
        assert torch.equal(loader.batch_indices, y)


def test_disk_loader_two_rank_shards_union_the_single_batches(folder):
    single = _ids_loader(folder, batch_size=6, workers=0)
    ranks = [_ids_loader(folder, batch_size=3, workers=0, rank=r, world_size=2) for r in range(2)]
    for ld in [single, *ranks]:
        ld.set_epoch(4)
    for (xs, ys), (x0, y0), (x1, y1) in zip(single, *ranks, strict=True):
        assert set(ys.tolist()) == set(y0.tolist()) | set(y1.tolist())
        merged = dict(zip(y0.tolist() + y1.tolist(), torch.cat([x0, x1]), strict=True))
        for i, img in zip(ys.tolist(), xs, strict=True):
            assert torch.equal(merged[i], img)  # identical augmentation per sample


def test_disk_loader_with_worker_processes_matches_in_process(folder):
    a = _ids_loader(folder, batch_size=6, workers=0)
    b = _ids_loader(folder, batch_size=6, workers=2)
    a.set_epoch(1)
    b.set_epoch(1)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_make_loader_picks_by_dataset_kind(folder, digits):
    assert isinstance(make_loader(load_dataset("imagefolder", folder), 4, workers=0), DiskLoader)
    assert isinstance(make_loader(digits, 4), InMemoryLoader)


def test_train_and_eval_cli_on_an_imagefolder(folder, tmp_path, capsys):
    code = main(
        [
            "-q",
            "train",
            "--dataset",
            "imagefolder",
            "--data-dir",
            str(folder),
            "--epochs",
            "1",
            "--batch-size",
            "6",
            "--workers",
            "0",
            "--eval-steps",
            "2",
            "--overfit-check-size",
            "6",
            "--out-dir",
            str(tmp_path / "runs"),
            "--name",
            "img",
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    run = tmp_path / "runs" / "img"
    assert f"run folder: {run}" in out and (run / "last.pt").exists()
    code = main(
        [
            "-q",
            "eval",
            str(run),
            "--data-dir",
            str(folder),
            "--limit",
            "6",
            "--restarts",
            "1",
            "--steps",
            "2",
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "6" in out
    vis = tmp_path / "vis"
    code = main(
        ["-q", "visualize", "targeted", str(run), "--data-dir", str(folder)]
        + ["--out", str(vis), "--steps", "3", "--targets", "0", "1"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (vis / "grid.png").exists() and (vis / "images.npz").exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_gives_the_same_augmentation_in_memory_and_from_disk(folder, workers):
    ds = load_dataset("imagefolder", folder)
    in_memory = ds.train_x[list(range(len(ds.train_y)))]  # the decoded uint8 tensor
    ids = torch.arange(len(ds.train_y))  # labels = sample indices
    kw = dict(crop_padding=2, flip=True, seed=5)
    disk = DiskLoader(ds.train_x, ids, 4, workers=workers, **kw)
    memory = InMemoryLoader(in_memory, ids, 4, **kw)
    for epoch in (0, 3):
        disk.set_epoch(epoch)
        memory.set_epoch(epoch)
        pairs = list(zip(disk, memory, strict=True))
        for (xd, yd), (xm, ym) in pairs:
            assert torch.equal(yd, ym) and torch.equal(xd, xm)
    plain = InMemoryLoader(in_memory, ids, 4, seed=5)
    plain.set_epoch(3)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(plain, memory, strict=True))
