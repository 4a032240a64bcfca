"""CIFAR-10 / CIFAR-100 from the official "python version" folders.

Those files are pickles; they are read with an unpickler that only admits the handful of
numpy constructors a data array needs, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastrobust.data.base import ImageDataset, existing_folder, register_dataset
from fastrobust.errors import ConfigError, DataError

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}

CIFAR10_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR10_STD = [0.2471, 0.2435, 0.2616]
CIFAR100_MEAN = [0.5071, 0.4865, 0.4409]
CIFAR100_STD = [0.2673, 0.2564, 0.2762]


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: Path) -> dict[str, Any]:
    """Read one CIFAR python batch file with the restricted unpickler; keys become str."""
    try:
        raw = path.read_bytes()
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"missing CIFAR file {path}") from None
    except Exception as exc:  # noqa: BLE001  any decoding failure is a malformed file
        raise DataError(f"{path} is not a CIFAR python batch file ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR python batch file (no dict inside)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _images_labels(
    batch: dict[str, Any], path: Path, label_key: str
) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path} lacks the 'data' or '{label_key}' entry of a CIFAR batch")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path}: expected N x 3072 uint8 data and N labels, got {data.shape}")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels


def _check_labels(labels: np.ndarray, path: Path, num_classes: int) -> None:
    """Every label a class index of the dataset (else training fails deep inside the loss)."""
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: label {int(labels[first])} of image {first} is not a class index "
            f"0..{num_classes - 1} ({int(bad.sum())} such labels); the file is corrupt or "
            "not this dataset"
        )


def _load(
    folder: Path | None,
    *,
    name: str,
    num_classes: int,
    subdir: str,
    train_files: list[str],
    test_file: str,
    label_key: str,
    meta_file: str,
    meta_key: str,
    mean: list[float],
    std: list[float],
) -> ImageDataset:
    if folder is None:
        raise ConfigError(
            f"dataset {name} needs data_dir pointing at its python-version folder",
            field="data_dir",
        )
    existing_folder(folder, name)
    if (folder / subdir).is_dir():
        folder = folder / subdir
    parts = []
    for f in [*train_files, test_file]:
        images, labels = _images_labels(read_batch(folder / f), folder / f, label_key)
        _check_labels(labels, folder / f, num_classes)
        parts.append((images, labels))
    train_x = np.concatenate([p[0] for p in parts[:-1]])
    train_y = np.concatenate([p[1] for p in parts[:-1]])
    test_x, test_y = parts[-1]
    classes: list[str]
    meta_path = folder / meta_file
    if meta_path.exists():
        names = read_batch(meta_path).get(meta_key, [])
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    else:
        classes = []
    if len(classes) != num_classes:
        classes = [str(i) for i in range(num_classes)]
    return ImageDataset(
        name=name,
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        classes=classes,
        mean=mean,
        std=std,
        crop_padding=4,
        flip=True,
    )


@register_dataset("cifar10")
def load_cifar10(data_dir: Path | None) -> ImageDataset:
    """``cifar-10-batches-py``: data_batch_1..5, test_batch, batches.meta."""
    return _load(
        data_dir,
        name="cifar10",
        num_classes=10,
        subdir="cifar-10-batches-py",
        train_files=[f"data_batch_{i}" for i in range(1, 6)],
        test_file="test_batch",
        label_key="labels",
        meta_file="batches.meta",
        meta_key="label_names",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )


@register_dataset("cifar100")
def load_cifar100(data_dir: Path | None) -> ImageDataset:
    """``cifar-100-python``: train, test, meta (fine labels)."""
    return _load(
        data_dir,
        name="cifar100",
        num_classes=100,
        subdir="cifar-100-python",
        train_files=["train"],
        test_file="test",
        label_key="fine_labels",
        meta_file="meta",
        meta_key="fine_label_names",
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
    )
