"""Typed settings of ``fastrobust export`` (flags, checks and help from :mod:`fastrobust.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from fastrobust.errors import ConfigError
from fastrobust.evaluation.settings import Norm
from fastrobust.export.robustbench import check_link, check_name
from fastrobust.settings import at_least, check_settings, positive, setting

#: the section name of these settings in errors (``export.out``)
SECTION = "export"
#: the RobustBench fields a person writes (the measured ones come from the evaluation)
HAND_WRITTEN = ("title", "authors", "link", "venue")


@dataclass
class ExportSettings:
    """What to export where, and the RobustBench entry's hand-written fields."""

    out: str | None = None
    """export folder (None: RUN-export next to the run folder or checkpoint)"""
    force: bool = False
    """replace an existing export folder"""
    robustbench: str | None = None
    """also run an AutoAttack standard evaluation on the whole test set (or reuse one, see
    evaluation) and write RobustBench's model_info JSON under this model name, which follows
    their rule: SurnameYearFirstWordOfTheTitle, e.g. Goodwin2020Fast or Goodwin2020Fast_R18"""
    title: str | None = None
    """RobustBench: the paper's title (their name field)"""
    authors: str | None = None
    """RobustBench: the paper's authors, comma-separated"""
    link: str | None = None
    """RobustBench: the paper's address (https://...)"""
    venue: str | None = None
    """RobustBench: where the paper appeared (e.g. HPEC 2020, arXiv, Dec 2026)"""
    additional_data: bool = False
    """RobustBench: trained with data beyond the dataset's own training set"""
    reported: str | None = None
    """RobustBench: the robust accuracy the paper reports, in percent (None: the measured one)"""
    footnote: str | None = None
    """RobustBench: a footnote shown with the entry"""
    architecture: str | None = None
    """RobustBench: the architecture's name as shown (None: the model's registry name)"""
    norm: Norm | None = None
    """threat model of the AutoAttack evaluation (None: the model's training one; needed for
    a checkpoint not written by fastrobust)"""
    eps: float | None = setting(None, rule=positive())
    """radius of the AutoAttack evaluation (None: the model's training eps)"""
    evaluation: str | None = None
    """robustness.json (or its folder) of an AutoAttack evaluation on the whole test set to
    reuse instead of running one (fastrobust eval RUN --attack autoattack --eps EPS)"""
    dataset: str | None = None
    """dataset of a checkpoint not written by fastrobust (cifar10, restricted_imagenet, ...)"""
    arch: str | None = None
    """architecture of a checkpoint not written by fastrobust (None: read from its tensors)"""
    data_dir: str | None = None
    """folder holding the dataset for the AutoAttack evaluation (None: the run's)"""
    batch_size: int = setting(500, rule=at_least(1))
    """samples per chunk of the AutoAttack evaluation"""
    device: str = "auto"
    """auto (GPU if any), cpu, cuda, cuda:1, ..."""
    progress: bool = True
    """progress bar of the AutoAttack evaluation on stderr"""

    def __post_init__(self) -> None:
        check_settings(self, SECTION)
        if self.robustbench is None:
            return
        check_name(self.robustbench, field=f"{SECTION}.robustbench")
        for name in HAND_WRITTEN:
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(
                    f"{SECTION}.robustbench needs {SECTION}.{name} (RobustBench's entry "
                    f"records it)",
                    field=f"{SECTION}.{name}",
                )
        check_link(str(self.link), field=f"{SECTION}.link")
