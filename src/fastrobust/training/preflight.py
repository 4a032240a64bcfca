"""Everything a run checks and resolves before it builds anything: the preflight.

:func:`preflight` runs once, before the process group, the model, the run folder or any
epoch: the output folder is writable, the data loads, the config fits the data and the
processes (batch size, attack radius), the model name is resolved for the image size, the
validation and overfitting-check subsets are drawn from the seed (and, for disk datasets,
decoded), and the between-epoch intervals are resolved. A mistake found here costs nothing;
:mod:`fastrobust.training.build` then builds the run from the :class:`Plan`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from fastrobust import distributed
from fastrobust.data import ImageDataset, load_dataset
from fastrobust.data.subsets import SubsetRecord, sample_split
from fastrobust.models.resnet import resolve_stem
from fastrobust.outputs import check_output_dir
from fastrobust.seeding import RunSeeds
from fastrobust.tracking import check_trackers
from fastrobust.training.config import TrainConfig
from fastrobust.training.setup import (
    check_before_training,
    check_evaluation_images,
    with_dataset_augmentation,
)
from fastrobust.training.validation import Intervals, between_epoch_intervals

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """A run checked and resolved, before anything is built: its config (with the dataset's
    augmentation and the resolved model name), processes, device, data, seeds, subsets and
    intervals."""

    cfg: TrainConfig
    world: distributed.WorldInfo
    device: torch.device
    data: ImageDataset
    seeds: RunSeeds
    check_subset: SubsetRecord
    """the fixed training batch the overfitting check attacks"""
    val_subset: SubsetRecord
    """the test images validation uses"""
    intervals: Intervals

    @property
    def check_idx(self) -> torch.Tensor:
        """Indices of the overfitting check's training images."""
        return self.check_subset.index_tensor()


def preflight(
    cfg: TrainConfig,
    *,
    dataset: ImageDataset | None = None,
    new_folder: bool = True,
    own_model: bool = False,
    resuming: bool = False,
) -> Plan:
    """Check and resolve ``cfg`` for a run (``new_folder``: in a run folder still to be
    created under ``out_dir``; ``own_model``: the caller gives the network; ``resuming``:
    the model name is the recorded one). The caller's ``cfg`` is not changed."""
    cfg.validate()
    world = distributed.world_info_from_env()
    if new_folder and world.is_main:  # before any work: a bad out_dir costs nothing
        check_output_dir(cfg.runtime.out_dir, what="output folder")
    store = Path(cfg.runtime.out_dir).expanduser()  # a missing extra fails on every rank
    check_trackers(cfg.runtime, store, section="runtime", probe=world.is_main)
    device = distributed.resolve_device(cfg.runtime.device, world.local_rank)
    data_cfg = cfg.data
    data = (
        dataset
        if dataset is not None
        else load_dataset(data_cfg.dataset, data_cfg.data_dir, image_size=data_cfg.image_size)
    )
    # the run records the augmentation it really uses
    cfg = with_dataset_augmentation(cfg, data)
    check_before_training(cfg, data, world)  # on every rank: a bad batch size fails at once
    if not own_model and not resuming:  # resnet18/50 at >= 64 px: the ImageNet stem, recorded
        # by its explicit name (a resumed run keeps the model it recorded)
        explicit = resolve_stem(cfg.optimisation.model, data.image_size)
        if explicit != cfg.optimisation.model:
            log.info("%s at %d px: %s", cfg.optimisation.model, data.image_size, explicit)
            cfg.optimisation.model = explicit
    seeds = RunSeeds(cfg.runtime.seed)
    check_subset, val_subset = draw_subsets(cfg, data, seeds)
    check_evaluation_images(
        data, val_subset.index_tensor(), seed=cfg.runtime.seed, workers=cfg.data.workers
    )
    intervals = between_epoch_intervals(cfg, n_train=len(data.train_y), n_test=len(data.test_y))
    return Plan(cfg, world, device, data, seeds, check_subset, val_subset, intervals)


def draw_subsets(
    cfg: TrainConfig, data: ImageDataset, seeds: RunSeeds
) -> tuple[SubsetRecord, SubsetRecord]:
    """The overfitting check's training images and validation's test images: class-stratified
    samples drawn from the run's seed (:mod:`fastrobust.data.subsets`); for a run recorded
    with ``legacy`` subsets, the ones it drew then, so that it resumes as it would have gone
    on (a random training batch, the first ``eval_limit`` test images)."""
    legacy = cfg.subsets == "legacy"
    n_check = min(cfg.evaluation.overfit_check_size, len(data.train_y))
    check = sample_split(
        data.train_y,
        n_check,
        seeds.legacy_overfit_batch() if legacy else seeds.subsets(),
        split="train",
        rule="random" if legacy else "stratified",
    )
    validation = sample_split(
        data.test_y,
        cfg.evaluation.eval_limit,
        seeds.subsets(),
        split="test",
        rule="first" if legacy else "stratified",
    )
    return check, validation
