"""Data-parallel training on CPU with gloo: 2 real processes (torchrun and torch.multiprocessing).

What must hold (issue 5): a 2-rank run finishes and writes its run folder once; all ranks end
with identical weights; without BatchNorm the 2-rank run equals a 1-process run with the same
global batch; resuming under DDP equals never stopping; evaluation shards the test set with
exact counts; a rank that fails ends the whole job non-zero with its error shown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import ddp_draws
from cifar_files import write_cifar10
from conftest import tiny_config
from fastrobust import distributed
from fastrobust.attacks.threat import L2
from fastrobust.checkpoint import load_checkpoint
from fastrobust.data import load_dataset
from fastrobust.data.subsets import stratified_subset
from fastrobust.errors import ConfigError
from fastrobust.models import ModelSpec, build_model
from fastrobust.training.trainer import Trainer, fit, resume
from fastrobust.training.validation import evaluate_split

pytestmark = pytest.mark.usefixtures("one_thread")
PY = sys.executable
TORCHRUN = [PY, "-m", "torch.distributed.run"]
EVAL_N = 101  # odd: 2 ranks get 51 and 50 test images, nothing padded


# -- environment -> world -------------------------------------------------------------------------
def test_world_from_torchrun_variables():
    w = distributed.world_info_from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8"})
    assert (w.rank, w.local_rank, w.world_size, w.is_main, w.distributed) == (3, 1, 8, False, True)


def test_world_from_srun_variables_and_torchrun_wins():
    srun = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "8"}
    srun |= {"SLURM_NTASKS": "8"}
    assert distributed.world_info_from_env(srun) == distributed.WorldInfo(
        rank=5, local_rank=1, world_size=8
    )
    both = srun | {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}
    assert distributed.world_info_from_env(both) == distributed.WorldInfo(
        rank=0, local_rank=0, world_size=2
    )


def test_batch_script_without_srun_is_one_process():
    # sbatch --ntasks=4 sets these for the batch script itself, which is a single process
    env = {"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "7"}
    assert distributed.world_info_from_env(env) == distributed.WorldInfo()
    assert distributed.world_info_from_env({}) == distributed.WorldInfo()


@pytest.mark.parametrize(
    ("nodes", "first"),
    [
        ("gpu07", "gpu07"),
        ("gpu[03-04,07],cpu1", "gpu03"),
        ("a-b[001-002]", "a-b001"),
        ("n[1-2]-ib[3-4]", "n1-ib3"),
        ("node1,node2", "node1"),
    ],
)
def test_first_host_of_slurm_nodelist(nodes, first):
    assert distributed.first_host(nodes) == first


def test_slurm_rendezvous_address_and_port():
    env = {"SLURM_STEP_NODELIST": "gpu[12-13]", "SLURM_JOB_ID": "123456"}
    distributed._slurm_rendezvous(env)
    assert env["MASTER_ADDR"] == "gpu12"
    assert env["MASTER_PORT"] == str(20000 + 123456 % 20000)
    mine = {"SLURM_JOB_NODELIST": "x1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"}
    distributed._slurm_rendezvous(mine)
    assert (mine["MASTER_ADDR"], mine["MASTER_PORT"]) == ("10.0.0.1", "1234")


def test_collectives_are_identity_in_one_process():
    assert not dist.is_initialized()
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(3) == [3]


def test_uneven_global_batch_fails_before_the_rendezvous(tmp_path, digits, monkeypatch):
    # rank 0 of 2 with nobody else coming: the error must come at once, not after a timeout
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(distributed.free_port()))
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "3")
    with pytest.raises(ConfigError, match="does not divide evenly over 2 processes"):
        fit(tiny_config(tmp_path, batch_size=127, device="cpu"), dataset=digits)
    assert not dist.is_initialized()


# -- 2 processes through torch.multiprocessing ---------------------------------------------------
def _even(data):
    """640 training images: an even number, so no rank gets a padded sample."""
    return dataclasses.replace(data, train_x=data.train_x[:640], train_y=data.train_y[:640])


def _configs(root: Path) -> dict:
    common = dict(device="cpu", epochs=2, lr=0.05, schedule="constant", eval_limit=20)
    common |= dict(weight_average=0.9, label_smoothing=0.1)  # both must equal one process
    return {
        # standard training: 1 and 2 processes must agree to float rounding. (Fast training
        # is chaotic: a 1e-7 change of the initial weights already moves them by ~1% after
        # 2 epochs here, so it is checked for identical ranks and exact resumes instead.)
        "equal": tiny_config(root, name="equal", method="standard", overfit_check_size=0, **common),
        "full": tiny_config(root, name="full", method="fast", **common),
        "half": tiny_config(root, name="half", method="fast", **(common | {"epochs": 1})),
        # training for randomized smoothing: each rank draws its own noise samples
        "smoothadv": tiny_config(
            root,
            name="smoothadv",
            method="smoothadv",
            sigma=0.25,
            noise_samples=2,
            **(common | {"epochs": 1, "eps": 0.5}),
        ),  # fmt: skip
    }


def _subset(data) -> torch.Tensor:
    """An odd-sized stratified subset of the test split (as --eval-limit validates on)."""
    return stratified_subset(data.test_y, EVAL_N, seed=3)


def _ddp_worker(root: str) -> None:
    """One rank: train the three runs, save this rank's weights, evaluate sharded."""
    os.environ[distributed.TIMEOUT_ENV] = "60"  # a deadlock fails the test instead of hanging it
    rank, out, data = int(os.environ["RANK"]), Path(root), _even(load_dataset("digits"))
    cfgs = _configs(out)
    trainer = Trainer(cfgs["equal"], dataset=data)
    trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"equal-rank{rank}.pt")
    x, y = data.test_x[:EVAL_N], data.test_y[:EVAL_N]
    clean, adv = evaluate_split(
        trainer.model, x, y, L2(1.0), steps=2, batch_size=16, device=trainer.device,
        world=trainer.world,
    )  # fmt: skip
    (out / f"eval-rank{rank}.json").write_text(json.dumps([clean, adv]))
    subset = evaluate_split(
        trainer.model, data.test_x, data.test_y, L2(1.0), steps=2, batch_size=16,
        device=trainer.device, world=trainer.world, indices=_subset(data),
    )  # fmt: skip
    (out / f"eval-subset-rank{rank}.json").write_text(json.dumps(subset))
    trainer = Trainer(cfgs["full"], dataset=data)
    trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"full-rank{rank}.pt")
    fit(cfgs["half"], dataset=data)
    resume(out / "half", epochs=2, dataset=data)
    trainer = Trainer(cfgs["smoothadv"], dataset=data)
    trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"smoothadv-rank{rank}.pt")
    rows = torch.arange(rank, ddp_draws.GLOBAL, 2)  # the sampler deals rank r r, r+2, ...
    for name in ddp_draws.BATCH_TERMS:  # two steps of each method with a whole-batch term
        torch.save(ddp_draws.method_steps(name, rows, rank), out / f"steps-{name}-rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    distributed.launch_local(_ddp_worker, 2, str(root), threads=1)
    assert not dist.is_initialized()  # the parent never joined a group
    return root


def _initial_model(data) -> torch.nn.Module:
    """The weights every run above starts from (seed 0)."""
    torch.manual_seed(0)
    spec = ModelSpec("small_cnn", data.num_classes, data.in_channels, data.image_size)
    return build_model(dataclasses.replace(spec, mean=data.mean, std=data.std))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("run", ["equal", "full", "smoothadv"])
def test_all_ranks_end_with_identical_weights(ddp_runs, run):
    w0, w1 = _weights(ddp_runs / f"{run}-rank0.pt"), _weights(ddp_runs / f"{run}-rank1.pt")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    saved = load_checkpoint(ddp_runs / run / "last.pt")["model"]
    assert all(torch.equal(saved[k], w0[k]) for k in w0)


def test_two_ranks_match_one_process_without_batchnorm(ddp_runs, tmp_path, digits):
    trainer = Trainer(_configs(tmp_path)["equal"], dataset=_even(digits))
    trainer.fit()
    one = trainer.model.state_dict()
    two = _weights(ddp_runs / "equal-rank0.pt")
    initial = _initial_model(digits).state_dict()
    moved = max((one[k] - initial[k]).abs().max().item() for k in one)
    assert moved > 1e-2  # training did change the weights
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    assert trainer.parts.average is not None
    one_avg = trainer.parts.average.state_dict()
    two_avg = load_checkpoint(ddp_runs / "equal" / "last.pt")["ema_model"]
    assert any(not torch.equal(one_avg[k], one[k]) for k in one)  # the average is not the last
    for k in one_avg:
        torch.testing.assert_close(two_avg[k], one_avg[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("name", ddp_draws.BATCH_TERMS)
def test_whole_batch_terms_under_ddp_are_the_global_batchs(ddp_runs, name):
    """NuAT's nuclear norm, N-AAER's abnormal share and means, FGSM-PCO's gap of batch means
    and LIET's batch draws: under DDP each is the global batch's (issue 21), so 2 ranks' weight
    gradients and mean loss equal one process's, per-sample draws alike (tests/ddp_draws.py);
    each half on its own, with its own stream (as DDP without that), would differ."""
    ranks = [_weights(ddp_runs / f"steps-{name}-rank{r}.pt") for r in range(2)]
    g = ddp_draws.GLOBAL
    one = ddp_draws.method_steps(name, torch.arange(g), 0)
    halves = [ddp_draws.method_steps(name, torch.arange(r, g, 2), r) for r in range(2)]
    apart = 0.0
    for step in range(2):
        mine, theirs = ranks[0][step], ranks[1][step]
        loss = (mine.pop("loss") + theirs.pop("loss")) / 2  # the epoch's reported mean
        torch.testing.assert_close(loss, one[step].pop("loss"), rtol=1e-5, atol=1e-6)
        for k, v in one[step].items():
            assert torch.equal(mine[k], theirs[k]), k  # DDP's mean gradient
            torch.testing.assert_close(mine[k], v, rtol=1e-4, atol=1e-6)
            naive = (halves[0][step][k] + halves[1][step][k]) / 2
            apart = max(apart, float((naive - v).abs().max() / v.abs().max()))
    assert (apart > 1e-2) == ddp_draws.BATCH_TERMS[name], apart


def test_ddp_run_folder_written_once(ddp_runs):
    run = ddp_runs / "equal"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_done"] == 2
    state = load_checkpoint(run / "last.pt")
    assert len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["cpu"], state["rng_ranks"][1]["cpu"])


def test_resume_under_ddp_equals_never_stopping(ddp_runs):
    full = load_checkpoint(ddp_runs / "full" / "last.pt")
    resumed = load_checkpoint(ddp_runs / "half" / "last.pt")
    assert resumed["epoch"] == full["epoch"] == 2
    for key in ("model", "ema_model"):
        for k, v in full[key].items():
            assert torch.equal(resumed[key][k], v), (key, k)
    for r in range(2):
        assert torch.equal(resumed["rng_ranks"][r]["cpu"], full["rng_ranks"][r]["cpu"])


def test_sharded_evaluation_counts_each_test_image_once(ddp_runs, digits):
    r0 = json.loads((ddp_runs / "eval-rank0.json").read_text())
    r1 = json.loads((ddp_runs / "eval-rank1.json").read_text())
    assert r0 == r1  # every rank gets the all-reduced result
    data = _even(digits)
    model = _initial_model(data)
    model.load_state_dict(_weights(ddp_runs / "equal-rank0.pt"))
    x, y = data.test_x[:EVAL_N], data.test_y[:EVAL_N]
    clean, _ = evaluate_split(
        model, x, y, L2(1.0), steps=2, batch_size=16, device=torch.device("cpu"),
        world=distributed.WorldInfo(),
    )  # fmt: skip
    assert r0[0] == clean  # a padded duplicate would change the fraction
    assert 0.0 < clean < 1.0
    s0 = json.loads((ddp_runs / "eval-subset-rank0.json").read_text())
    s1 = json.loads((ddp_runs / "eval-subset-rank1.json").read_text())
    idx = _subset(data)
    clean_subset, _ = evaluate_split(
        model, data.test_x[idx], data.test_y[idx], L2(1.0), steps=2, batch_size=16,
        device=torch.device("cpu"), world=distributed.WorldInfo(),
    )  # fmt: skip
    assert s0 == s1 and s0[0] == clean_subset  # the subset, sharded with exact counts


# -- 2 processes through torchrun and the CLI ----------------------------------------------------
def _torchrun(args: list[str], tmp: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", **{distributed.TIMEOUT_ENV: "60"}
    )
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(key, None)
    cmd = TORCHRUN + ["--nproc_per_node", "2", "--master_port", str(distributed.free_port())] + args
    return subprocess.run(
        cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_torchrun_cli_trains_with_two_ranks(tmp_path):
    args = ["-m", "fastrobust", "train", "--device", "cpu", "--epochs", "1", "--no-progress"]
    args += ["--out-dir", str(tmp_path), "--name", "tr", "--eval-limit", "50", "--eval-steps", "2"]
    args += ["--logger", "csv"]  # the trackers log once, on rank 0 (issue 22)
    proc = _torchrun(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1  # only rank 0 reports
    assert proc.stderr.count("training small_cnn on digits") == 1  # only rank 0 logs
    assert json.loads((tmp_path / "tr" / "summary.json").read_text())["world_size"] == 2
    assert len((tmp_path / "tr" / "metrics.jsonl").read_text().splitlines()) == 1
    logged = (tmp_path / "tr" / "csv" / "metrics.csv").read_text().splitlines()[1:]
    assert len([line for line in logged if ",train_loss," in line]) == 1


@pytest.mark.slow  # ~10-35 s: in the slow run
def test_a_failing_rank_fails_the_job_with_its_error(tmp_path):
    # rank 0's node has the CIFAR folder, rank 1's does not: rank 1 stops with a DataError
    # while rank 0 waits for it; torchrun must end the job non-zero and show the error.
    write_cifar10(tmp_path / "node0")
    script = (
        'exec "$0" -m fastrobust train --dataset cifar10 --data-dir "$1/node$RANK" '
        '--device cpu --epochs 1 --batch-size 32 --no-progress --out-dir "$1/runs"'
    )
    proc = _torchrun(["--no-python", "sh", "-c", script, PY, str(tmp_path)], tmp_path)
    assert proc.returncode != 0
    assert "fastrobust: error (rank 1): data folder" in proc.stderr
    assert "node1 does not exist" in proc.stderr
    assert proc.stderr.count("fastrobust: error") == 1  # rank 0 was stopped, not failed
    assert not re.search(r'File ".*fastrobust', proc.stderr)  # no traceback of ours


# -- issue 20: ranks and GPUs, without a GPU (torch.cuda is stood in for) --------------------
def _fake_gpus(monkeypatch, count: int) -> list[torch.device]:
    current: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.append(torch.device(d)))
    return current


def _torchrun_env(rank: int, nproc: int) -> dict[str, str]:
    return dict(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc)
    )


@pytest.mark.parametrize("rank", [0, 1])
def test_more_torchrun_ranks_than_gpus_fail_on_every_rank_before_rendezvous(
    monkeypatch, tmp_path, digits, rank
):
    """torchrun --nproc_per_node 2 on a one-GPU machine: every rank (rank 0 too, which would
    otherwise wait at the rendezvous) fails in one line; before, both got cuda:0."""
    _fake_gpus(monkeypatch, 1)
    with pytest.raises(ConfigError, match=r"2 processes on this node but 1 GPU\(s\) visible"):
        distributed.resolve_device("cuda", rank, env=_torchrun_env(rank, 2))
    init = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: init.append(kw))
    for key, value in _torchrun_env(rank, 2).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="GPU"):
        fit(tiny_config(tmp_path, device="cuda"), dataset=digits)
    assert init == []  # no rendezvous was attempted


def test_one_gpu_per_task_and_explicit_gpus_are_set_as_current(monkeypatch):
    current = _fake_gpus(monkeypatch, 1)
    slurm = dict(SLURM_PROCID="1", SLURM_LOCALID="1", SLURM_STEP_NUM_TASKS="2")
    assert distributed.resolve_device("cuda", 1, env=slurm) == torch.device("cuda", 0)
    _fake_gpus(monkeypatch, 2)
    assert distributed.resolve_device("cuda", 1, env=_torchrun_env(1, 2)) == torch.device("cuda", 1)
    current = _fake_gpus(monkeypatch, 2)
    assert distributed.resolve_device("cuda:1", 0, env={}) == torch.device("cuda", 1)
    assert current == [torch.device("cuda", 1)]  # --device cuda:1 in one process: set_device


def _slow_rank_worker(out: str) -> None:
    """Rank 1 joins the object gather 2.5 s late; the tensor collectives' timeout is 1 s."""
    import time

    world = distributed.world_info_from_env()
    distributed.init_distributed(world, torch.device("cpu"))
    if world.rank == 1:
        time.sleep(2.5)
    gathered = distributed.all_gather_object(world.rank * 10)
    shared = distributed.broadcast_object("from rank 0" if world.rank == 0 else None)
    Path(out, f"rank{world.rank}.json").write_text(json.dumps([gathered, shared]))


def test_object_collectives_wait_past_the_collective_timeout(tmp_path, monkeypatch):
    """Ranks done early wait for a slow one in the object collectives (their own gloo group
    with FASTROBUST_OBJECT_TIMEOUT), not the collectives' timeout (issue 20, item 4)."""
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "1")
    monkeypatch.setenv(distributed.OBJECT_TIMEOUT_ENV, "60")
    distributed.launch_local(_slow_rank_worker, 2, str(tmp_path), threads=1)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [[0, 10], "from rank 0"]
