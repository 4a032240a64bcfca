"""Typed settings of a certification (Cohen, Rosenfeld & Kolter, ICML 2019): the noise, the
sample sizes, the confidence, the points, the smoothed-attack check, where models and results
are. ``fastrobust certify`` builds its flags from :class:`CertifySettings`; errors name a field
as ``certify.n0`` (the command line says ``--n0``)."""

from __future__ import annotations

from dataclasses import dataclass

from fastrobust.data.disk_loader import WORKERS
from fastrobust.errors import ConfigError
from fastrobust.evaluation.inputs import parse_eps_list, validate_eps_list
from fastrobust.settings import at_least, check_settings, in_range, non_negative, positive, setting

#: the section name of these settings in errors (``certify.sigma``)
SECTION = "certify"


def _radii(value: list[float] | str | None, name: str) -> list[float] | None:
    if isinstance(value, str):
        return parse_eps_list(value, field=f"{SECTION}.{name}")
    if isinstance(value, list | tuple):
        return validate_eps_list(value, field=f"{SECTION}.{name}")
    return value


@dataclass
class CertifySettings:
    """Cohen et al.'s CERTIFY over a test set, and the check against the smoothed attack."""

    sigma: float = setting(0.25, rule=positive())
    """standard deviation of the smoothing noise, in pixel units of [0,1] images"""
    n0: int = setting(100, rule=at_least(1))
    """noise samples that pick the top class of each point"""
    n: int = setting(100_000, rule=at_least(1))
    """noise samples that bound the top class's probability (Cohen et al.: 100,000)"""
    alpha: float = setting(0.001, rule=in_range(0, 1, low_open=True, high_open=True))
    """failure probability of each certificate"""
    batch_size: int = setting(1000, rule=at_least(1))
    """noisy samples per forward pass (at most n)"""
    limit: int | None = setting(None, rule=at_least(1))
    """certify a class-stratified sample of N test points, drawn from the seed (None: all)"""
    seed: int = setting(0, rule=non_negative())
    """seed of the noise (each point's draws are keyed by its index) and of the sample"""
    radii: list[float] | None = setting(None, text=True)
    """comma-separated, increasing L2 radii of the certified-accuracy curve (None: 0 to
    4*sigma in steps of sigma/4)"""
    checks: bool = True
    """check certified accuracy against the smoothed-classifier attack (Salman et al. 2019)"""
    check_size: int = setting(32, rule=at_least(1))
    """points the smoothed-attack check runs on (the first of the set)"""
    check_radii: list[float] | None = setting(None, text=True)
    """comma-separated L2 radii of the smoothed-attack check (None: sigma/2 and sigma)"""
    check_steps: int = setting(20, rule=at_least(1))
    """PGD steps of the smoothed-classifier attack"""
    check_samples: int = setting(16, rule=at_least(1))
    """noise draws the attack's Monte-Carlo soft classifier averages"""
    check_n: int = setting(1000, rule=at_least(1))
    """noise samples of the majority vote at each attacked point"""
    dataset: str | None = setting(None, flag="--data")
    """dataset (None: the one the first model was trained on)"""
    data_dir: str | None = None
    """folder holding the dataset files (None: the folder the first model was trained from)"""
    arch: str | None = None
    """architecture of checkpoints not written by fastrobust (as for eval)"""
    empirical: str | None = None
    """robustness.json of a fastrobust eval of the same models, drawn in the plot (optional)"""
    out: str | None = None
    """output folder (None: a new certify-<timestamp> next to the first run)"""
    import_model_factory: bool = False
    """import and run the package.module:factory model a checkpoint names (trusted files only)"""
    device: str = "auto"
    """auto (GPU if any), cpu, cuda, cuda:1, ..."""
    workers: int = setting(WORKERS, rule=at_least(0))
    """DataLoader worker processes that decode the images of a disk dataset (imagefolder,
    restricted_imagenet) while points are certified (0: decode in the main process); the
    certificates do not depend on it"""
    progress: bool = True
    """progress bar on stderr"""

    def __post_init__(self) -> None:
        self.radii = _radii(self.radii, "radii")
        self.check_radii = _radii(self.check_radii, "check_radii")
        check_settings(self, SECTION)
        if self.n0 > self.n:
            raise ConfigError(
                f"{SECTION}.n0 ({self.n0}) must be at most {SECTION}.n ({self.n})",
                field=f"{SECTION}.n0",
            )
        if self.batch_size > self.n:
            raise ConfigError(
                f"{SECTION}.batch_size ({self.batch_size}) must be at most {SECTION}.n "
                f"({self.n}): a forward pass never holds more than one point's samples",
                field=f"{SECTION}.batch_size",
            )

    @property
    def curve_radii(self) -> list[float]:
        """The radii of the certified-accuracy curve."""
        if self.radii is not None:
            return list(self.radii)
        return [self.sigma * k / 4 for k in range(17)]

    @property
    def attack_radii(self) -> list[float]:
        """The radii the smoothed-attack check attacks at (all > 0)."""
        radii = self.check_radii if self.check_radii is not None else [self.sigma / 2, self.sigma]
        return [r for r in radii if r > 0]

    def record(self) -> dict[str, object]:
        """What a report records: the statistical and check settings, not the locations."""
        names = ["sigma", "n0", "n", "alpha", "batch_size", "limit", "seed", "checks"]
        names += ["check_size", "check_steps", "check_samples", "check_n"]
        return {name: getattr(self, name) for name in names} | {
            "radii": self.curve_radii,
            "check_radii": self.attack_radii,
        }
