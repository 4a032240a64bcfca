"""The study's optional ``certify`` section: validated with the study config, off by default."""

import pytest

from fastrobust.errors import ConfigError
from fastrobust.study.config import StudyConfig


def test_certify_is_off_by_default_and_a_section_gives_certify_settings():
    assert StudyConfig().certify_settings() is None
    cfg = StudyConfig.from_dict({"seed": 3, "certify": {"sigma": 0.5, "n": 2000, "limit": 50}})
    settings = cfg.certify_settings()
    assert settings is not None
    assert (settings.sigma, settings.n, settings.limit, settings.seed) == (0.5, 2000, 50, 3)


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"sigma": 0}, "certify.sigma"),
        ({"n0": 5000, "n": 100}, "certify.n0"),
        ({"out": "x"}, "certify.out is set by the study"),
        ({"sigmaa": 0.5}, "sigmaa"),
    ],
)
def test_a_bad_certify_section_is_one_config_error(section, match):
    with pytest.raises(ConfigError, match=match):
        StudyConfig.from_dict({"certify": section})
