"""Datasets read from folders of image files: ``imagefolder`` and ``restricted_imagenet``.

Both expect one folder per class inside a training and a test split folder::

    ROOT/train/<class>/*.png|*.jpg|*.jpeg     (any case: ImageNet's *.JPEG too)
    ROOT/val/<class>/...                      (or ROOT/test/<class>/...)

Images are not held in memory: ``train_x`` / ``test_x`` are :class:`LazyImages`, which decode
(with Pillow) and resize only the images an index asks for. Training reads them through
:class:`~fastrobust.data.disk_loader.DiskLoader` (DataLoader worker processes).

Sizes below 64 px (:data:`~fastrobust.data.imagenet_augment.MIN_SIZE`): the shorter side is
resized to ``image_size`` (bilinear) and the centre square kept; training pad-crops (and
flips). 64 px and more (ImageNet practice): evaluation resizes the shorter side to
``image_size * 256/224`` and keeps the central square; training takes a random-resized crop of
the original photo (and flips it) (:mod:`fastrobust.data.imagenet_augment`). Flips: on for
``restricted_imagenet`` (photos), off for ``imagefolder`` unless the run turns them on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fastrobust.data.base import ImageDataset, channel_stats, existing_folder, register_dataset
from fastrobust.data.imagenet_augment import EVAL_RESIZE_RATIO, MIN_SIZE
from fastrobust.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEST_SPLITS = ("val", "test")
STATS_IMAGES = 500
"""training images (evenly spaced) used to compute an imagefolder's mean and std"""
DECODE_CHECK_IMAGES = 2000
"""evaluation images decoded before training starts: all of them up to this many, else a
seeded random sample of this many"""

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

#: Restricted ImageNet (Tsipras et al. 2019, "Robustness May Be at Odds with Accuracy";
#: Engstrom et al. 2019, the MadryLab ``robustness`` library): 9 super-classes, each an
#: inclusive range of indices into the *sorted* list of the 1000 ILSVRC2012 wnids.
RESTRICTED_IMAGENET_RANGES: list[tuple[str, int, int]] = [
    ("dog", 151, 268),
    ("cat", 281, 285),
    ("frog", 30, 32),
    ("turtle", 33, 37),
    ("bird", 80, 100),
    ("primate", 365, 382),
    ("fish", 389, 397),
    ("crab", 118, 121),
    ("insect", 300, 319),
]
WNID_FILES = ("wnids.txt", "LOC_synset_mapping.txt")
"""files in ROOT that may list the 1000 ImageNet wnids (first word per line), sorted"""


def decode_image(
    path: Path, size: int, channels: int, *, draft: bool = True, resize_ratio: float = 1.0
) -> torch.Tensor:
    """Read one image file as a uint8 ``channels x size x size`` tensor: the shorter side is
    resized to ``round(size * resize_ratio)`` (bilinear), then the central square is kept
    (``resize_ratio`` 256/224: ImageNet's evaluation crop).

    ``draft``: let the JPEG decoder downscale by 1/2, 1/4 or 1/8 in the DCT domain (Pillow's
    draft mode) while keeping the shorter side at least ``size``, before the bilinear resize:
    decoding a 500x375 JPEG for 64 px images then skips most of the full-resolution work.
    ``False`` decodes at full resolution (the reference ``benchmarks/decode.py`` compares with).
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
            resized = max(size, round(size * resize_ratio))
            if draft and img.format == "JPEG" and min(w, h) > resized:
                scale = resized / min(w, h)
                img.draft(
                    "L" if channels == 1 else None, (math.ceil(w * scale), math.ceil(h * scale))
                )
            img = img.convert("L" if channels == 1 else "RGB")
            w, h = img.size
            if (w, h) != (size, size):
                scale = resized / min(w, h)
                nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
                img = img.resize((nw, nh), Image.Resampling.BILINEAR)
                left, top = (nw - size) // 2, (nh - size) // 2
                img = img.crop((left, top, left + size, top + size))
            arr = np.asarray(img, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001  any decoding failure names the file
        raise DataError(f"cannot read image {path}: {exc}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class LazyImages:
    """A read-only uint8 ``N x C x H x W`` "tensor" of image files, decoded when indexed.

    ``x[i]`` gives one ``C x H x W`` tensor; ``x[a:b]``, ``x[index_tensor]`` or ``x[list]``
    give a stacked ``n x C x H x W`` uint8 tensor of just those files.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(
        self, files: Sequence[Path], size: int, channels: int = 3, *, resize_ratio: float = 1.0
    ) -> None:
        self.files = list(files)
        self.size = int(size)
        self.channels = int(channels)
        self.resize_ratio = float(resize_ratio)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), self.channels, self.size, self.size))

    def dim(self) -> int:
        return 4

    def is_floating_point(self) -> bool:
        return False

    def load(self, i: int) -> torch.Tensor:
        """Decode image ``i`` as ``C x H x W`` uint8."""
        return decode_image(self.files[i], self.size, self.channels, resize_ratio=self.resize_ratio)

    def take(self, indices: torch.Tensor | Sequence[int]) -> LazyImages:
        """The images ``indices`` as a LazyImages of their own (nothing decoded): a subset
        stays on disk until a loader decodes it."""
        idx = indices.tolist() if isinstance(indices, torch.Tensor) else indices
        files = [self.files[int(i)] for i in idx]
        return LazyImages(files, self.size, self.channels, resize_ratio=self.resize_ratio)

    def __getitem__(self, key: int | slice | torch.Tensor | Sequence[int]) -> torch.Tensor:
        if isinstance(key, int | np.integer):
            return self.load(int(key))
        if isinstance(key, torch.Tensor) and key.dim() == 0:
            return self.load(int(key))
        if isinstance(key, slice):
            idx: list[int] = list(range(len(self.files)))[key]
        elif isinstance(key, torch.Tensor):
            if key.dtype == torch.bool:
                key = key.nonzero().flatten()
            idx = [int(i) for i in key.tolist()]
        else:
            idx = [int(i) for i in key]
        if not idx:
            return torch.empty((0, self.channels, self.size, self.size), dtype=torch.uint8)
        return torch.stack([self.load(i) for i in idx])

    def __repr__(self) -> str:
        return f"LazyImages({len(self)} files, shape={tuple(self.shape)})"


# ------------------------------------------------------------------------------ scanning


def _root(data_dir: Path | None, name: str) -> Path:
    if data_dir is None:
        raise ConfigError(f"dataset {name} needs data_dir pointing at its folder", field="data_dir")
    return existing_folder(data_dir, name)


def _splits(root: Path) -> tuple[Path, Path]:
    train = root / "train"
    test = next((root / s for s in TEST_SPLITS if (root / s).is_dir()), None)
    if not train.is_dir() or test is None:
        raise DataError(
            f"{root} needs a train/ and a val/ (or test/) folder, each with one folder per class"
        )
    return train, test


def _class_dirs(split: Path) -> list[str]:
    with os.scandir(split) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    with os.scandir(folder) as it:
        names = sorted(
            e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)
        )
    return [folder / n for n in names]


def _scan(split: Path, label_of: dict[str, int]) -> tuple[list[Path], torch.Tensor]:
    """Files and labels of the class folders of ``split`` that ``label_of`` maps; an empty
    class folder is refused (it would silently train without that class)."""
    files: list[Path] = []
    labels: list[int] = []
    for cls in _class_dirs(split):
        if cls not in label_of:
            continue
        found = _images_in(split / cls)
        if not found:
            raise DataError(
                f"class folder {split / cls} holds no .png/.jpg/.jpeg images; add images or "
                "remove the folder"
            )
        files += found
        labels += [label_of[cls]] * len(found)
    if not files:
        raise DataError(f"no .png/.jpg/.jpeg images in the class folders of {split}")
    return files, torch.tensor(labels, dtype=torch.long)


def _first_image_facts(path: Path) -> tuple[int, int]:
    """(shorter side, channels) of one image."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return min(img.size), 1 if img.mode in ("L", "1", "I;16", "I", "F") else 3
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read image {path}: {exc}") from None


def _check_size(image_size: int | None) -> None:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")


def decode_check_sample(
    images: LazyImages, indices: Sequence[int] | None = None, *, seed: int = 0
) -> list[int]:
    """The images a corrupt-file check before training decodes: those at ``indices`` (all
    when None), or above :data:`DECODE_CHECK_IMAGES` a random sample of that many drawn with
    ``seed`` (:func:`fastrobust.data.disk_loader.check_decodable` decodes them)."""
    picked = list(range(len(images)) if indices is None else indices)
    if len(picked) > DECODE_CHECK_IMAGES:
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(picked), generator=generator)[:DECODE_CHECK_IMAGES]
        picked = [picked[i] for i in order.tolist()]
    return picked


# ------------------------------------------------------------------------------ datasets


@register_dataset("imagefolder")
def load_imagefolder(data_dir: Path | None, *, image_size: int | None = None) -> ImageDataset:
    """``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*`` (or ``test``); classes = sorted
    folder names of ``train``. Size: ``image_size``, else the first image's shorter side.
    Mean/std: computed from up to 500 evenly spaced training images. Augmentation and
    evaluation crop: by size, see the module docstring; no flip by default (the folder may
    hold digits, text or anything else a mirror makes wrong; ``flip: true`` in the run's
    config turns it on)."""
    _check_size(image_size)
    root = _root(data_dir, "imagefolder")
    train_dir, test_dir = _splits(root)
    classes = _class_dirs(train_dir)
    if len(classes) < 2:
        raise DataError(f"{train_dir} holds {len(classes)} class folder(s); need at least 2")
    extra = sorted(set(_class_dirs(test_dir)) - set(classes))
    if extra:
        raise DataError(f"{test_dir} has class folders not in {train_dir}: {', '.join(extra[:5])}")
    label_of = {c: i for i, c in enumerate(classes)}
    train_files, train_y = _scan(train_dir, label_of)
    test_files, test_y = _scan(test_dir, label_of)
    size, channels = _first_image_facts(train_files[0])
    size = image_size or size
    ratio = EVAL_RESIZE_RATIO if size >= MIN_SIZE else 1.0
    train_x = LazyImages(train_files, size, channels, resize_ratio=ratio)
    test_x = LazyImages(test_files, size, channels, resize_ratio=ratio)
    pick = torch.linspace(0, len(train_x) - 1, min(STATS_IMAGES, len(train_x))).round().long()
    mean, std = channel_stats(train_x[torch.unique(pick)])
    log.info(
        "imagefolder %s: %d classes, %d train / %d test images at %dx%d",
        root,
        len(classes),
        len(train_x),
        len(test_x),
        size,
        size,
    )
    return ImageDataset(
        name="imagefolder",
        train_x=train_x,  # type: ignore[arg-type]  # LazyImages stands in for the uint8 tensor
        train_y=train_y,
        test_x=test_x,  # type: ignore[arg-type]  # LazyImages stands in for the uint8 tensor
        test_y=test_y,
        classes=classes,
        mean=mean,
        std=std,
        crop_padding=0 if size >= MIN_SIZE else max(1, size // 8),
        flip=False,
        train_crop="resized" if size >= MIN_SIZE else "pad",
        notes={"root": str(root)},
    )


def imagenet_wnids(root: Path, train_dir: Path) -> list[str]:
    """The sorted list of the 1000 ImageNet wnids: the class folders of ``train`` when all 1000
    are there, else the first word of each line of ``ROOT/wnids.txt`` or
    ``ROOT/LOC_synset_mapping.txt``."""
    folders = _class_dirs(train_dir)
    if len(folders) == 1000:
        return folders
    for name in WNID_FILES:
        path = root / name
        if path.is_file():
            words = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
            if len(words) != 1000:
                raise DataError(f"{path} lists {len(words)} wnids; expected the 1000 of ImageNet")
            return sorted(words)
    raise DataError(
        f"{train_dir} has {len(folders)} class folders, not the 1000 ImageNet ones; put the "
        f"1000 wnids (one per line) in {root / 'wnids.txt'} to map the folders present"
    )


@register_dataset("restricted_imagenet")
def load_restricted_imagenet(
    data_dir: Path | None, *, image_size: int | None = None
) -> ImageDataset:
    """Restricted ImageNet from an ILSVRC2012 folder tree (``ROOT/train/<wnid>/*.JPEG``,
    ``ROOT/val/<wnid>/*.JPEG``).

    Keeps the 9 super-classes of Tsipras et al. 2019 ("Robustness May Be at Odds with
    Accuracy") and Engstrom et al. 2019 (MadryLab ``robustness``), each an inclusive range of
    the index into the sorted 1000 wnids, labelled 0..8 in this order: dog 151-268,
    cat 281-285, frog 30-32, turtle 33-37, bird 80-100, primate 365-382, fish 389-397,
    crab 118-121, insect 300-319. Images of all other classes are left out.

    Size: ``image_size`` (default 224). Normalisation: ImageNet's mean/std. Augmentation and
    evaluation crop: by size, see the module docstring (at 224 px: random-resized crop + flip
    for training, resize to 256 + central 224 crop for evaluation).
    """
    _check_size(image_size)
    root = _root(data_dir, "restricted_imagenet")
    train_dir, test_dir = _splits(root)
    wnids = imagenet_wnids(root, train_dir)
    label_of = {
        wnids[i]: label
        for label, (_, lo, hi) in enumerate(RESTRICTED_IMAGENET_RANGES)
        for i in range(lo, hi + 1)
    }
    train_files, train_y = _scan(train_dir, label_of)
    test_files, test_y = _scan(test_dir, label_of)
    size = image_size or 224
    ratio = EVAL_RESIZE_RATIO if size >= MIN_SIZE else 1.0
    train_x = LazyImages(train_files, size, 3, resize_ratio=ratio)
    test_x = LazyImages(test_files, size, 3, resize_ratio=ratio)
    return ImageDataset(
        name="restricted_imagenet",
        train_x=train_x,  # type: ignore[arg-type]  # LazyImages stands in for the uint8 tensor
        train_y=train_y,
        test_x=test_x,  # type: ignore[arg-type]  # LazyImages stands in for the uint8 tensor
        test_y=test_y,
        classes=[name for name, _, _ in RESTRICTED_IMAGENET_RANGES],
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        crop_padding=0 if size >= MIN_SIZE else max(1, size // 8),
        flip=True,
        train_crop="resized" if size >= MIN_SIZE else "pad",
        notes={"root": str(root)},
    )
