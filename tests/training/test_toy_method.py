"""Adding a training method is one class with its options and its registration: a toy method
defined and registered here only runs through ``fit`` and ``fastrobust train`` (its option a
generated flag), records its option, and is refused options it does not have."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import yaml
from torch import nn

from fastrobust.cli import main
from fastrobust.errors import ConfigError
from fastrobust.settings import check_settings, in_range, setting
from fastrobust.training.config import TrainConfig
from fastrobust.training.methods import (
    AttackSettings,
    TrainingMethod,
    build_method,
    register_method,
    unregister_method,
)
from fastrobust.training.trainer import fit

TINY = dict(epochs=1, eval_limit=50, eval_steps=2, overfit_check_size=16, progress=False)


@dataclass
class ToyOptions:
    """toy's options."""

    toy_scale: float = setting(0.5, rule=in_range(0, 1))
    """toy: size of each pixel's random-sign move as a share of eps"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


class RandomSign(TrainingMethod):
    """Moves every pixel by ``toy_scale * eps`` up or down at random (no gradient), projected
    into the threat model and the box; counts its calls."""

    Options = ToyOptions

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.threat = attack.threat()
        self.calls = 0

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        sign = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
        delta = self.threat.project(sign * self.options.toy_scale * self.threat.eps, x)
        return (x + delta).detach()

    def describe(self) -> str:
        return f"toy random sign {self.options.toy_scale:g}*eps"


@pytest.fixture
def toy():
    register_method("toy")(RandomSign)
    yield RandomSign
    unregister_method("toy")


def test_toy_perturbation_obeys_its_definition(toy):
    method = build_method(TrainConfig(method="toy", norm="linf", eps=0.1, toy_scale=0.5).attack)
    x = torch.full((4, 1, 8, 8), 0.5)
    moved = method.perturb(nn.Identity(), x, torch.zeros(4, dtype=torch.long)) - x
    assert torch.allclose(moved.abs(), torch.full_like(x, 0.05))  # every pixel, 0.5 * eps
    assert 0 < (moved > 0).float().mean() < 1  # up and down


def test_toy_method_trains_through_fit_and_records_its_option(toy, tmp_path, monkeypatch):
    calls = []
    real = RandomSign.perturb

    def counted(self, model, x, y):
        calls.append(len(y))
        return real(self, model, x, y)

    monkeypatch.setattr(RandomSign, "perturb", counted)
    cfg = TrainConfig(method="toy", toy_scale=0.25, out_dir=str(tmp_path), name="toy", **TINY)
    result = fit(cfg)
    assert sum(calls) == 1437  # every digits training image, once in the one epoch
    recorded = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert recorded["attack"]["toy_scale"] == 0.25 and recorded["attack"]["method"] == "toy"
    assert TrainConfig.from_recorded(recorded).attack.options == ToyOptions(0.25)
    rows = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[0])["attack"] == "toy random sign 0.25*eps"


def test_toy_method_trains_through_the_command_line(toy, tmp_path, capsys):
    argv = ["train", "--method", "toy", "--toy-scale", "0.75", "--out-dir", str(tmp_path)]
    argv += ["--name", "cli", "--epochs", "1", "--eval-limit", "50", "--eval-steps", "2"]
    assert main([*argv, "--no-progress"]) == 0, capsys.readouterr().err
    recorded = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert recorded["attack"]["toy_scale"] == 0.75


def test_toy_option_errors_name_the_field_in_python_and_the_flag_on_the_command_line(
    toy, tmp_path, capsys
):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(method="fast", toy_scale=0.3)
    assert str(caught.value) == (
        "attack.toy_scale is an option of method toy, not of fast; drop it or set attack.method toy"
    )
    assert caught.value.field == "attack.toy_scale"
    where = ["--out-dir", str(tmp_path), "--name", "bad"]
    assert main(["train", *where, "--toy-scale", "0.3"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "--toy-scale is an option of method toy, not of fast; drop it or set --method toy"
        )
    )
    with pytest.raises(ConfigError, match=r"attack.toy_scale must be in \[0, 1\], got 2"):
        TrainConfig(method="toy", toy_scale=2.0)
    assert main(["train", *where, "--method", "toy", "--toy-scale", "2"]) == 2
    assert "--toy-scale must be in [0, 1], got 2" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_unregistered_toy_method_is_gone(toy):
    unregister_method("toy")
    with pytest.raises(ConfigError, match=r"unknown method 'toy' \(attack.method\)"):
        TrainConfig(method="toy")
    with pytest.raises(ConfigError, match="unknown config keys: toy_scale"):
        TrainConfig(toy_scale=0.5)
    register_method("toy")(RandomSign)  # for the fixture's teardown
