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


def test_the_curves_stage_writes_the_certified_report_of_every_model(
    trained_runs, tmp_path, digits
):
    import json
    import shutil

    import torch

    from fastrobust import distributed
    from fastrobust.study.folder import StageCache, StudyFolder
    from fastrobust.study.stages import StudyContext, certified_curves

    section = dict(sigma=0.25, n0=10, n=100, batch_size=100, limit=6, check_size=3)
    section |= dict(check_steps=1, check_samples=2, check_n=20)
    cfg = StudyConfig.from_dict({"methods": ["standard", "fast"], "certify": section})
    folder = StudyFolder(tmp_path)
    for label in ("standard", "fast"):
        shutil.copytree(trained_runs[label], folder.run(label))
    ctx = StudyContext(
        cfg, folder, StageCache(tmp_path), digits, torch.device("cpu"), distributed.WorldInfo()
    )
    certified_curves(ctx)
    doc = json.loads((folder.curves / "certified.json").read_text())
    assert list(doc["models"]) == ["standard", "fast"] and doc["settings"]["n"] == 100
    assert (folder.curves / "certified.png").is_file()
    assert ctx.ran == ["curves/certified"]
    certified_curves(ctx)  # cached: the same key runs nothing
    assert ctx.ran == ["curves/certified"]
