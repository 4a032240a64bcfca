"""What a dataset is without its images: image shape, classes and split sizes.

Timing (Figure 1) needs only these numbers; for the datasets fastrobust knows by name they are
written here once (:data:`KNOWN_FACTS`, checked against the loaders by the tests), and any other
dataset is loaded to read them (:func:`dataset_facts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastrobust.data.base import ImageDataset, load_dataset


@dataclass(frozen=True)
class DatasetFacts:
    """Image shape, number of classes and the sizes of the training and test splits."""

    image_shape: tuple[int, int, int]
    """C x H x W of one image"""
    num_classes: int
    train_size: int
    """training images"""
    test_size: int
    """test images"""

    @classmethod
    def of(cls, data: ImageDataset) -> DatasetFacts:
        """The facts of a loaded dataset."""
        return cls(data.image_shape, data.num_classes, len(data.train_y), len(data.test_y))


#: the facts of the registered datasets of fixed size (the image folders vary)
KNOWN_FACTS: dict[str, DatasetFacts] = {
    "digits": DatasetFacts((1, 8, 8), 10, 1437, 360),
    "cifar10": DatasetFacts((3, 32, 32), 10, 50_000, 10_000),
    "cifar100": DatasetFacts((3, 32, 32), 100, 50_000, 10_000),
}


def dataset_facts(name: str, data_dir: str | Path | None = None) -> DatasetFacts:
    """The facts of dataset ``name``: from :data:`KNOWN_FACTS`, else by loading it (from
    ``data_dir``)."""
    if name in KNOWN_FACTS:
        return KNOWN_FACTS[name]
    return DatasetFacts.of(load_dataset(name, data_dir))
