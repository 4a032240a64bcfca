import os
import pickle

import numpy as np
import pytest
import torch

from cifar_files import write_cifar10, write_cifar100
from fastrobust.data import InMemoryLoader, load_dataset
from fastrobust.errors import ConfigError, DataError


def test_digits_split_follows_sklearn_order(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    assert len(digits.test_y) == 360 and len(digits.train_y) == 1437
    assert digits.train_x.dtype == torch.uint8 and digits.train_x.shape[1:] == (1, 8, 8)
    assert torch.equal(digits.test_y, torch.from_numpy(bunch.target[::5]))
    first_train = np.rint(bunch.images[1] * 255 / 16).astype(np.uint8)
    assert np.array_equal(digits.train_x[0, 0].numpy(), first_train)
    assert digits.num_classes == 10 and digits.train_x.max() == 255


def test_cifar10_reads_the_python_format(tmp_path):
    write_cifar10(tmp_path, n_per_batch=7)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_x.shape == (35, 3, 32, 32) and ds.test_x.shape == (7, 3, 32, 32)
    assert ds.classes[0] == "airplane" and ds.num_classes == 10
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    assert np.array_equal(ds.test_x[3].numpy(), raw[b"data"][3].reshape(3, 32, 32))
    # the inner folder works too
    assert len(load_dataset("cifar10", tmp_path / "cifar-10-batches-py").train_y) == 35


def test_cifar100_reads_fine_labels(tmp_path):
    write_cifar100(tmp_path, n=9)
    ds = load_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.train_x.shape == (9, 3, 32, 32)


def test_malicious_pickle_is_refused(tmp_path):
    folder = write_cifar10(tmp_path, n_per_batch=3)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match="not a CIFAR"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def test_missing_and_malformed_data_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", tmp_path / "nope")
    with pytest.raises(ConfigError, match="data_dir"):
        load_dataset("cifar10", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="missing CIFAR file"):
        load_dataset("cifar10", tmp_path / "empty")
    folder = write_cifar10(tmp_path / "bad", n_per_batch=3)
    (folder / "data_batch_2").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError):
        load_dataset("cifar10", tmp_path / "bad")
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_dataset("mnist")


def _loader(x, y, **kw):
    return InMemoryLoader(x, y, kw.pop("batch_size", 8), **kw)


def test_loader_covers_the_data_and_is_deterministic_per_epoch(digits):
    x, y = digits.train_x[:50], digits.train_y[:50]
    loader = _loader(x, y, crop_padding=1, seed=3)
    loader.set_epoch(0)
    a = [b for b in loader]
    loader.set_epoch(0)
    b = [b for b in loader]
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b, strict=True))
    assert sum(len(p[1]) for p in a) == 50 and len(loader) == 7
    loader.set_epoch(1)
    c = [b for b in loader]
    assert not torch.equal(torch.cat([p[1] for p in a]), torch.cat([p[1] for p in c]))
    assert all(0 <= float(p[0].min()) and float(p[0].max()) <= 1 for p in a)


def test_loader_shards_union_equal_the_single_process_batches(digits):
    x = digits.train_x[:64]
    ids = torch.arange(64)  # recover which samples each batch holds via the labels trick
    single = _loader(x, ids, batch_size=16, crop_padding=1, flip=True, seed=5)
    ranks = [
        _loader(x, ids, batch_size=8, crop_padding=1, flip=True, seed=5, rank=r, world_size=2)
        for r in range(2)
    ]
    for ld in [single, *ranks]:
        ld.set_epoch(2)
    for (xs, ys), (x0, y0), (x1, y1) in zip(single, *ranks, strict=True):
        assert set(ys.tolist()) == set(y0.tolist()) | set(y1.tolist())
        merged = dict(zip(y0.tolist() + y1.tolist(), torch.cat([x0, x1]), strict=True))
        for i, img in zip(ys.tolist(), xs, strict=True):
            assert torch.equal(merged[i], img)  # identical augmentation per sample


def test_augmentation_crops_and_flips():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(64, 1, 1, 1) * 10
    y = torch.zeros(64, dtype=torch.long)
    loader = _loader(x, y, batch_size=64, crop_padding=1, flip=True, shuffle=False)
    loader.set_epoch(0)
    (out, _) = next(iter(loader))
    ref = x[0].float() / 255
    assert any(torch.equal(o, ref) for o in out)
    assert any(torch.equal(o, ref.flip(2)) for o in out)
    assert any((o == 0).any() for o in out)  # zero padding shows
    assert len({o.numpy().tobytes() for o in out}) > 5


def test_digits_image_size_upsamples_the_same_images():
    big = load_dataset("digits", image_size=16)
    small = load_dataset("digits")
    assert big.train_x.shape == (1437, 1, 16, 16) and big.train_x.dtype == torch.uint8
    assert torch.equal(big.train_y, small.train_y) and big.crop_padding == 2
    # each 2x2 block averages back near its source pixel: far nearer than another image's
    pooled = torch.nn.functional.avg_pool2d(big.test_x.float(), 2)
    own = (pooled - small.test_x.float()).abs().mean()
    other = (pooled - small.test_x.float().roll(1, 0)).abs().mean()
    assert own < 0.5 * other
    with pytest.raises(ConfigError):
        load_dataset("digits", image_size=0)
