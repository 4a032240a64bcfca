"""Datasets as ``[0,1]`` image tensors: bundled digits, CIFAR-10/100 from the user's disk."""

from fastrobust.data.base import DATASETS, ImageDataset, load_dataset, register_dataset
from fastrobust.data.loader import InMemoryLoader

from fastrobust.data import cifar, digits  # noqa: E402,F401  isort: skip  (registers them)

__all__ = ["DATASETS", "ImageDataset", "InMemoryLoader", "load_dataset", "register_dataset"]
