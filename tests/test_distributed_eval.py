"""Sharded evaluation (issue 10): robustness curves over 2 real gloo processes on CPU.

What must hold: each rank evaluates a disjoint block of whole chunks (nothing padded, nothing
twice); the merged curve equals, field by field, the sum of one-process runs on the same shards
with the same seeds, and the one-process run on all points (random starts are keyed by the
chunk's place in the whole set), for APGD-CE, APGD-T, FAB-T, Square and AutoAttack; more ranks
than points works; an error on one rank stops every rank; ``torchrun -m fastrobust eval``
writes one report over the whole test set, equal to the one-process report.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import train_mlp
from fastrobust import distributed
from fastrobust.cli import main
from fastrobust.data import load_dataset
from fastrobust.distributed import RankFailed, gather_together, on_every_rank, together
from fastrobust.errors import ConfigError
from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import CurveRun, curve_for_run, robustness_curve
from fastrobust.evaluation.inputs import data_tensors
from fastrobust.evaluation.results import RobustnessCurve
from fastrobust.evaluation.sharding import merge_curves, plan_shards, sharded_robustness_curve

pytestmark = pytest.mark.usefixtures("one_thread")
PY = sys.executable
WORLD = 2
SMALL = {"steps": 5, "restarts": 2, "targets": 3, "queries": 30}
#: name -> keywords of the curve; limit N of the digits test split in chunks of batch_size
CASES = {
    "apgd-ce": dict(SMALL, attacks="apgd-ce", limit=30, batch_size=8),
    "apgd-t": dict(SMALL, attacks="apgd-t", limit=30, batch_size=8),
    "fab-t": dict(SMALL, attacks="fab-t", limit=30, batch_size=8),
    "square": dict(SMALL, attacks="square", limit=30, batch_size=8),
    # AutoAttack's own budgets (100 steps, 9 targets, 5000 queries): an eps grid where its
    # APGDs settle every point (Square would spend 5000 queries on a survivor), so it is quick
    "autoattack": dict(attacks="autoattack", limit=12, batch_size=6, eps=[0.13, 0.3]),
    "one-point": dict(SMALL, attacks="apgd-ce,square", limit=1, batch_size=8),
}
EPS = [0.0, 0.05, 0.1, 0.2]
#: fields every merged curve must share with the one-process curve
FIELDS = (
    "norm", "eps", "attacks", "steps", "restarts", "step_size", "random_start", "seed",
    "n", "robust", "fooled_by", "data", "attack_gradients", "version",
    "budgets", "accuracy", "clean_accuracy",
)  # fmt: skip


def _mlp(state: dict[str, torch.Tensor]) -> nn.Module:
    """conftest.train_mlp's network with the given weights."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    net.load_state_dict(state)
    return net.eval()


def _curve(model: nn.Module, data, case: dict, first_chunk: int = 0) -> RobustnessCurve:
    kw = {k: v for k, v in case.items() if k != "eps"}
    settings = CurveSettings(checks=False, **kw)
    run = CurveRun(first_chunk=first_chunk)  # the chunk keys of a shard (package-internal)
    return curve_for_run(model, data, "linf", case.get("eps", EPS), settings, run)


def _eval_worker(root: str) -> None:
    """One rank: every case sharded, then a mistake that only rank 0 sees (rank 1 has no
    point). Writes this rank's curves and errors."""
    os.environ[distributed.TIMEOUT_ENV] = "60"  # a deadlock fails the test instead of hanging
    world = distributed.world_info_from_env()
    distributed.init_distributed(world, torch.device("cpu"))
    out, data = Path(root), load_dataset("digits")
    model = _mlp(torch.load(out / "mlp.pt", weights_only=True))
    curves = {}
    for name, case in CASES.items():
        kw = {k: v for k, v in case.items() if k not in ("eps", "limit")}
        curves[name] = sharded_robustness_curve(
            model,
            data,
            "linf",
            case.get("eps", EPS),
            CurveSettings(limit=case["limit"], checks=False, **kw),
            world=world,
        )
    errors = {}
    try:  # a decreasing eps list is refused inside the curve, which only rank 0 (holding the
        # point) runs (a bad setting such as steps=0 is refused on every rank, by CurveSettings)
        sharded_robustness_curve(
            model, data, "linf", [1.0, 0.5], CurveSettings(limit=1), world=world
        )
    except Exception as exc:  # noqa: BLE001  recorded for the test
        errors["eps"] = [type(exc).__name__, str(exc), on_every_rank(exc)]
    try:  # a bug on rank 1 only: every rank must stop, rank 1 with its own error
        gather_together(lambda: 1 / (1 - world.rank), world)
    except Exception as exc:  # noqa: BLE001
        errors["bug"] = [type(exc).__name__, str(exc), on_every_rank(exc)]
    payload = {
        name: {"dict": c.to_dict(), "mask": c.robust_mask.tolist(), "clean": c.clean_correct}
        for name, c in curves.items()
    }
    payload["errors"] = errors  # type: ignore[assignment]
    (out / f"rank{world.rank}.json").write_text(json.dumps(payload))


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, digits) -> tuple[Path, nn.Module]:
    root = tmp_path_factory.mktemp("sharded-eval")
    # trained here on one thread (the session's mlp may have been trained on two): the same
    # weights every time, so the cases cost the same every time
    torch.save(train_mlp(digits).state_dict(), root / "mlp.pt")
    distributed.launch_local(_eval_worker, WORLD, str(root), threads=1)
    return root, _mlp(torch.load(root / "mlp.pt", weights_only=True))


def _rank(root: Path, rank: int) -> dict:
    return json.loads((root / f"rank{rank}.json").read_text())


# -- the plan --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "batch", "world"), [(30, 8, 2), (360, 100, 3), (101, 10, 8), (7, 8, 2), (1, 500, 4)]
)
def test_shards_are_disjoint_blocks_of_whole_chunks(n, batch, world):
    shards = plan_shards(n, batch, world)
    assert [s.rank for s in shards] == list(range(world))
    assert shards[0].start == 0 and shards[-1].stop == n and shards[0].n > 0
    for a, b in zip(shards, shards[1:]):
        assert a.stop == b.start and a.first_chunk + a.chunks == b.first_chunk
    for s in shards:
        assert s.start == min(s.first_chunk * batch, n)  # a shard starts on a chunk boundary
        assert s.n == sum(
            min(batch, n - c * batch) for c in range(s.first_chunk, s.first_chunk + s.chunks)
        )
    sizes = [s.chunks for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == -(-n // batch)


def test_bad_plans_and_mismatched_shards_are_config_errors(mlp, points):
    with pytest.raises(ConfigError, match="batch_size >= 1"):
        plan_shards(10, 0, 2)
    x, y = points
    a = robustness_curve(
        mlp, (x[:8], y[:8]), "linf", [0.1], CurveSettings(steps=2, restarts=1, checks=False)
    )
    b = robustness_curve(
        mlp, (x[8:16], y[8:16]), "linf", [0.1], CurveSettings(steps=3, restarts=1, checks=False)
    )
    with pytest.raises(ConfigError, match="different steps"):
        merge_curves([a, b])
    with pytest.raises(ConfigError, match="first_chunk must be >= 0"):
        curve_for_run(mlp, (x, y), "linf", [0.1], CurveSettings(), CurveRun(first_chunk=-1))


def test_one_process_is_the_plain_curve_and_collectives_need_a_group(mlp, points):
    x, y = points
    one = distributed.WorldInfo()
    kw = dict(steps=2, restarts=1, checks=False, batch_size=16)
    sharded = sharded_robustness_curve(mlp, (x, y), "linf", [0.1], CurveSettings(**kw), world=one)
    plain = robustness_curve(mlp, (x, y), "linf", [0.1], CurveSettings(**kw))
    assert sharded.shards is None and "shards" not in sharded.to_dict()
    assert sharded.robust == plain.robust and torch.equal(sharded.robust_mask, plain.robust_mask)
    assert together(lambda: 5, one) == 5 and gather_together(lambda: 5, one) == [5]
    with pytest.raises(ConfigError, match="no process group is up"):
        sharded_robustness_curve(mlp, (x, y), "linf", [0.1], world=distributed.WorldInfo(0, 0, 2))


def test_shards_need_the_chunk_keys_of_the_whole_set(sharded, digits):
    """Why ``first_chunk``: numbered from 0 on each shard, the shards draw other starts and
    windows than the whole set does, and Square's counts change (so the exactness tests below
    can fail); numbered as in the whole set, every point matches."""
    _, model = sharded
    case = CASES["square"]
    whole = _curve(model, digits, case)
    x, y, _ = data_tensors(digits, case["limit"], 0)
    shards = [s for s in plan_shards(len(y), case["batch_size"], WORLD) if s.n]
    for keyed, same in ((False, False), (True, True)):
        parts = [
            _curve(model, (x[s.start : s.stop], y[s.start : s.stop]), case | {"limit": None},
                   first_chunk=s.first_chunk if keyed else 0)
            for s in shards
        ]  # fmt: skip
        merged = merge_curves(parts)
        assert torch.equal(merged.robust_mask, whole.robust_mask) is same
        if same:  # totals may coincide by chance when the points differ, so only check equality
            assert merged.fooled_by == whole.fooled_by


# -- 2 processes -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_give_exact_counts(sharded, digits, name):
    """The 2-rank curve == the sum of 1-process runs on the same shards with the same seeds ==
    the 1-process run on every point (starts keyed by the chunk's place in the whole set)."""
    root, model = sharded
    case = CASES[name]
    r0, r1 = _rank(root, 0)[name], _rank(root, 1)[name]
    assert r0 == r1  # every rank gets the merged curve
    got = r0["dict"]
    whole = _curve(model, digits, case)
    x, y, info = data_tensors(digits, case["limit"], 0)
    shards = plan_shards(len(y), case["batch_size"], WORLD)
    parts = [
        _curve(model, (x[s.start : s.stop], y[s.start : s.stop]), case | {"limit": None},
               first_chunk=s.first_chunk)
        for s in shards if s.n
    ]  # fmt: skip
    info.pop("classes")
    summed = merge_curves(parts, data=info)
    for curve in (summed, whole):
        expected = curve.to_dict()
        for field in FIELDS:
            assert got[field] == expected[field], (name, field)
        assert r0["mask"] == curve.robust_mask.tolist(), name
        assert r0["clean"] == curve.clean_correct, name
    assert got["n"] == case["limit"] == sum(s["stop"] - s["start"] for s in got["shards"])
    assert [(s["start"], s["stop"]) for s in got["shards"]] == [(s.start, s.stop) for s in shards]
    # the counts are not vacuous: points are attacked and the attack under test fools some
    attacked = [a for a in got["attacks"] if any(f[a] for f in got["fooled_by"])]
    assert attacked, got["fooled_by"]
    assert got["attack_gradients"] > 0 or got["attacks"] == ["square"]  # square: no gradients
    if name == "one-point":  # more ranks than points: rank 1 had nothing and said so
        assert [s["stop"] - s["start"] for s in got["shards"]] == [1, 0]
        assert any("1 of 2 processes had no points" in note for note in got["notes"])
    elif name == "autoattack":
        assert got["version"] == "autoattack" and "apgd-ce" in attacked
    else:
        assert attacked == [name]


def test_an_error_on_one_rank_stops_every_rank(sharded):
    root, _ = sharded
    e0, e1 = _rank(root, 0)["errors"], _rank(root, 1)["errors"]
    # rank 0 hit the mistake; rank 1 (no point) learns of it instead of waiting in the merge
    assert e0["eps"][0] == "ConfigError" and "strictly increasing" in e0["eps"][1]
    assert e1["eps"] == [RankFailed.__name__, f"rank 0: {e0['eps'][1]}", True]
    assert e0["eps"][2]  # every rank raises a user error here: they may meet once more
    # a bug keeps its own exception on its rank; the others are told where it happened
    assert e1["bug"] == ["ZeroDivisionError", "division by zero", False]
    assert e0["bug"] == [RankFailed.__name__, "rank 1: ZeroDivisionError: division by zero", False]


# -- torchrun and the command line -----------------------------------------------------------
def _torchrun(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", **{distributed.TIMEOUT_ENV: "60"}
    )
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD)]
    cmd += ["--master_port", str(distributed.free_port()), "-m", "fastrobust", *args]
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


EVAL_ARGS = ["--eps", "0,0.5,1", "--attack", "apgd-ce,square", "--steps", "3", "--restarts", "1"]
EVAL_ARGS += ["--queries", "20", "--batch-size", "100", "--device", "cpu", "--no-progress"]


def test_torchrun_eval_writes_one_report_over_the_whole_test_set(trained_runs, tmp_path, capsys):
    run = str(trained_runs["fast"])
    proc = _torchrun(["eval", run, *EVAL_ARGS, "--out", str(tmp_path / "two")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("adversarial accuracy on digits") == 1  # only rank 0 prints
    assert "processes: 2 (points per rank: 200, 160" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # one report, nothing else
    two = json.loads((tmp_path / "two" / "robustness.json").read_text())
    assert two["world_size"] == 2
    assert main(["eval", run, *EVAL_ARGS, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    one = json.loads((tmp_path / "one" / "robustness.json").read_text())
    got, expected = two["models"]["fast"], one["models"]["fast"]
    assert got["n"] == expected["n"] == len(load_dataset("digits").test_y)
    for field in ("robust", "clean_accuracy", "fooled_by", "attack_gradients", "budgets", "data"):
        assert got[field] == expected[field], field
    assert 0 < got["robust"][1] < got["n"]  # the counts are not vacuous
    assert len(got["checks"]) == len(expected["checks"])  # rank 0's, on its 200 points
    assert any("rank 0's shard only" in note for note in got["notes"])


@pytest.mark.slow
def test_torchrun_eval_mistakes_are_one_line(trained_runs, tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    run = str(trained_runs["fast"])
    for args, message in [
        (["--out", str(tmp_path / "taken")], "is an existing file, not a folder"),
        (["--steps", "0", "--out", str(tmp_path / "o")], "--steps must be >= 1, got 0"),
    ]:
        proc = _torchrun(["eval", run, *EVAL_ARGS, *args], tmp_path)
        assert proc.returncode != 0
        lines = [line for line in proc.stderr.splitlines() if "fastrobust: error" in line]
        assert lines == [f"fastrobust: error: {lines[0].split(': ', 2)[2]}"], proc.stderr[-3000:]
        assert message in lines[0]  # said once, by rank 0
        assert not re.search(r'File ".*fastrobust', proc.stderr)  # no traceback of ours
    assert not (tmp_path / "o").exists()
