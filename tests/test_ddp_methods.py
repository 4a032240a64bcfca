"""DDP equals one process for every training method (issue 21): 2 gloo ranks with half the
global batch each end with the weights (and the weight average) of one process with the whole
batch, to float rounding, when every per-sample random draw is the same in both
(tests/ddp_draws.py). Weight averaging and label smoothing are on.

A method whose loss or attack reads a statistic of the whole batch (NuAT's nuclear norm,
N-AAER's abnormal share and means, FGSM-PCO's gap of two batch means) or a draw shared by the
batch (LIET's noise share and sign) makes every rank see the global batch's value, so these
runs compare too.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from ddp_draws import per_sample_draws
from fastrobust import distributed
from fastrobust.checkpoint import load_checkpoint
from fastrobust.data import load_dataset
from fastrobust.training.methods import method_class, method_names
from fastrobust.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

#: the methods whose runs are in the default suite: those with a batch statistic or a batch
#: draw that every rank must share, and fast as the plain case
QUICK = ("fast", "nuat", "n-aaer", "fgsm-pco", "liet")
#: options beyond the common ones
OPTIONS: dict[str, dict[str, object]] = {
    "smoothadv": {"noise_samples": 2, "eps": 0.5},
    "curriculum": {"steps": 3},
    "pgd": {"steps": 3},
    "trades": {"steps": 3},
    "mart": {"steps": 3},
    "free": {"replays": 2},
}


def _data():
    data = load_dataset("digits")
    return dataclasses.replace(data, train_x=data.train_x[:128], train_y=data.train_y[:128])


def _config(root: Path, name: str):
    norms = method_class(name).norms
    opts = dict(
        device="cpu", epochs=2, batch_size=32, lr=0.02, schedule="constant", eval_limit=10,
        eval_steps=1, eval_every=2, overfit_check_size=0, weight_average=0.9,
        label_smoothing=0.1, norm="l2" if norms is None else norms[0],
    )  # fmt: skip
    if opts["norm"] == "linf":
        opts["eps"] = 0.1
    opts |= OPTIONS.get(name, {})
    return tiny_config(root, name=name, method=name, **opts)


def _train(root: Path, name: str) -> dict[str, dict[str, torch.Tensor]]:
    trainer = Trainer(_config(root, name), dataset=_data())
    with per_sample_draws():
        trainer.fit()
    assert trainer.parts.average is not None
    return {"model": trainer.model.state_dict(), "average": trainer.parts.average.state_dict()}


def _ddp_worker(root: str, names: list[str]) -> None:
    os.environ[distributed.TIMEOUT_ENV] = "60"
    rank, out = int(os.environ["RANK"]), Path(root)
    for name in names:
        torch.save(_train(out, name), out / f"{name}-rank{rank}.pt")


def _launch(root: Path, names: list[str]) -> Path:
    distributed.launch_local(_ddp_worker, 2, str(root), names, threads=1)
    return root


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory) -> Path:
    return _launch(tmp_path_factory.mktemp("ddp_quick"), list(QUICK))


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory) -> Path:
    return _launch(
        tmp_path_factory.mktemp("ddp_rest"), [m for m in method_names() if m not in QUICK]
    )


def _compare(runs: Path, tmp_path: Path, name: str) -> None:
    ranks = [torch.load(runs / f"{name}-rank{r}.pt", weights_only=True) for r in range(2)]
    for key in ("model", "average"):
        for k, v in ranks[0][key].items():
            assert torch.equal(v, ranks[1][key][k]), (name, key, k)
    saved = load_checkpoint(runs / name / "last.pt")["model"]
    assert all(torch.equal(saved[k], v) for k, v in ranks[0]["model"].items())
    one = _train(tmp_path, name)
    for key in ("model", "average"):
        for k, v in one[key].items():
            torch.testing.assert_close(
                ranks[0][key][k],
                v,
                rtol=1e-4,
                atol=1e-5,
                msg=lambda m, at=f"{name} {key} {k}": f"{at}: {m}",
            )


@pytest.mark.parametrize("name", QUICK)
def test_two_ranks_equal_one_process(quick_runs, tmp_path, name):
    _compare(quick_runs, tmp_path, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [m for m in method_names() if m not in QUICK])
def test_two_ranks_equal_one_process_for_every_other_method(other_runs, tmp_path, name):
    _compare(other_runs, tmp_path, name)
