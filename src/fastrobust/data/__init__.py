"""Datasets as ``[0,1]`` image tensors: bundled digits, CIFAR-10/100 and image folders
(ImageFolder, Restricted ImageNet) from the user's disk."""

from fastrobust.data.base import DATASETS, ImageDataset, load_dataset, register_dataset
from fastrobust.data.facts import KNOWN_FACTS, DatasetFacts, dataset_facts
from fastrobust.data.loader import InMemoryLoader

from fastrobust.data import cifar, digits, imagefolder  # noqa: E402,F401  isort: skip  (registers them)
from fastrobust.data.disk_loader import DiskLoader, make_loader  # noqa: E402  isort: skip
from fastrobust.data.imagefolder import LazyImages  # noqa: E402  isort: skip

__all__ = [
    "DATASETS",
    "KNOWN_FACTS",
    "DatasetFacts",
    "DiskLoader",
    "ImageDataset",
    "InMemoryLoader",
    "LazyImages",
    "load_dataset",
    "dataset_facts",
    "make_loader",
    "register_dataset",
]
