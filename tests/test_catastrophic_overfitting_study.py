"""The catastrophic-overfitting study (benchmarks/catastrophic_overfitting.py): its collapse
epochs, and that the setting docs/catastrophic_overfitting.md gives as a command is the one the
benchmark trains (no training here: the study itself takes minutes)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    path = ROOT / "benchmarks" / "catastrophic_overfitting.py"
    spec = importlib.util.spec_from_file_location("catastrophic_overfitting", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collapse_epochs(study):
    curve = [0.1, 0.3, 0.02, 0.08, 0.04, 0.01]  # first <= 0.05 at 3, for good from 5
    assert study.first_collapse(curve) == 3 and study.collapse_epoch(curve) == 5
    recovers = [0.1, 0.3, 0.02, 0.3]
    assert study.first_collapse(recovers) == 3 and study.collapse_epoch(recovers) is None
    never_learnt = [0.05, 0.04, 0.03]  # never above the threshold: not a collapse
    assert study.first_collapse(never_learnt) is None and study.collapse_epoch(never_learnt) is None


def documented_command(setting_heading: str) -> dict[str, str]:
    """The flags of the first bash block after ``setting_heading`` in the study's doc."""
    text = (ROOT / "docs" / "catastrophic_overfitting.md").read_text()
    section = text[text.index(setting_heading) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    words = shlex.split(block)[2:]  # fastrobust train
    return {k.removeprefix("--").replace("-", "_"): v for k, v in zip(words[::2], words[1::2])}


@pytest.mark.parametrize(
    "name, heading",
    [("eps0.15", "## The collapsing setting"), ("eps0.2", "## The first setting: eps 0.2")],
)
def test_the_documented_command_is_the_benchmarks_setting(study, name, heading):
    setting = study.SETTINGS[name]
    flags = documented_command(heading)
    fast = study.methods(setting)["fast"]
    assert flags.pop("method") == fast["method"] == "fast"
    assert float(flags.pop("alpha")) == pytest.approx(fast["alpha"]) == 2 * setting["eps"]
    assert int(flags.pop("eval_every")) == setting["epochs"]
    for key, value in flags.items():
        assert type(setting[key])(value) == setting[key], key
    assert study.DEFAULT_SETTING == "eps0.15"
