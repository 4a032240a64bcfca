"""fastrobust on a GPU machine, checked in one command (issue 20): PASS / FAIL / INFO per check.

    python benchmarks/gpu_check.py [--device cuda] [--quick] [--out DIR]
    python benchmarks/gpu_check.py --device cpu --tiny     # the suite's CPU run (seconds)

Checks, in order:

* ``env``: torch, CUDA, cuDNN, the GPU, the float32 precision (IEEE or TF32) and cuDNN flags;
* ``collectives``: a one-rank process group (NCCL on a GPU, gloo on a CPU) through which every
  collective of the engine goes (all-reduce, barrier, object broadcast and gather on their gloo
  group, the fail-together gather, a DDP backward);
* ``step``: one training step of every registered method under fp32, bf16 and fp16: finite
  loss on the device, the trained batch inside the eps ball and the ``[0,1]`` box, channels_last
  kept (GPU), and the host syncs of the step (``torch.cuda.set_sync_debug_mode`` on a GPU, the
  op-trace counter of :func:`fastrobust.kernels.count_host_syncs` on a CPU);
* ``resume``: fit -> interrupt -> resume on the device, the largest weight difference to an
  uninterrupted run, without and (GPU) with ``deterministic``; the checkpoint reloaded on the CPU;
* ``compile`` (GPU): a PGD-7 attack on the eager vs the compiled attack model
  (``InputGradientsOnly``), and that a partial last batch compiles one static graph of its own;
* ``autoattack`` (GPU): AutoAttack on 100 digits on the GPU and on the CPU: the same robust
  counts and no false "not deterministic" masking warning;
* ``throughput`` (GPU): a CIFAR-shaped ResNet-50, bf16 + channels_last, batch 128: standard,
  fast and PGD-7 images/s, their ratios to standard against the pass-counting floors 1.67 and
  5.67, and fast training against the paper's ~720 images/s on two V100s (Goodwin et al. 2020).

A check that needs a GPU prints SKIP on a CPU. The summary counts each kind; the exit status is
1 when any check FAILs. ``--out DIR`` also writes every line as ``gpu_check.json`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrobust import distributed
from fastrobust.attacks.contract import InputGradientsOnly
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.threat import L2
from fastrobust.kernels import count_host_syncs, kernel_record
from fastrobust.models import ModelSpec, build_model
from fastrobust.training.config import AttackConfig, TrainConfig
from fastrobust.training.methods import build_method, method_class, method_names
from fastrobust.training.setup import compile_static
from fastrobust.training.step import autocast_context, training_step

PAPER_IMAGES_PER_S = 720.0  # fast training, two V100s (Goodwin et al. 2020)
FLOORS = {"fast": 5 / 3, "pgd7": 17 / 3}


@dataclass
class Context:
    device: torch.device
    quick: bool
    tiny: bool
    tmp: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def say(self, verdict: str, check: str, message: str, **values: Any) -> None:
        self.lines.append({"verdict": verdict, "check": check, "message": message} | values)
        print(f"{verdict:<5} {check:<11} {message}", flush=True)

    def verdict(self, ok: bool, check: str, message: str, **values: Any) -> None:
        self.say("PASS" if ok else "FAIL", check, message, **values)


def _sync(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.synchronize(ctx.device)


# -- env ---------------------------------------------------------------------------------------
def check_env(ctx: Context) -> None:
    cuda = torch.version.cuda or "none"
    ctx.say(
        "INFO", "env", f"torch {torch.__version__}, CUDA {cuda}, python {sys.version.split()[0]}"
    )
    if not ctx.cuda:
        ctx.say("INFO", "env", f"device {ctx.device}, {torch.get_num_threads()} threads")
    else:
        props = torch.cuda.get_device_properties(ctx.device)
        ctx.say(
            "INFO", "env", f"{props.name}, {props.total_memory / 2**30:.0f} GiB, capability "
            f"{props.major}.{props.minor}, cuDNN {torch.backends.cudnn.version()}, "
            f"{torch.cuda.device_count()} GPU(s) visible",
            gpu=props.name,
        )  # fmt: skip
    ctx.say("INFO", "env", f"kernels at start: {kernel_record()}", kernels=kernel_record())


# -- collectives -------------------------------------------------------------------------------
def check_collectives(ctx: Context) -> None:
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(distributed.free_port())
    backend = "nccl" if ctx.cuda else "gloo"
    kwargs = {"device_id": ctx.device} if ctx.cuda else {}
    dist.init_process_group(backend=backend, rank=0, world_size=1, **kwargs)  # type: ignore[arg-type]
    distributed._objects = dist.new_group(backend="gloo")  # as init_distributed makes it
    try:
        t = distributed.all_reduce_sum(torch.ones(3, device=ctx.device))
        distributed.barrier()
        shared = distributed.broadcast_object({"epoch": 1})
        gathered = distributed.all_gather_object(7)
        world = distributed.WorldInfo(rank=0, local_rank=0, world_size=2)  # forces the protocol
        settled = distributed.gather_together(lambda: "ok", world)
        model = nn.Linear(4, 2).to(ctx.device)
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.cuda else None
        )
        ddp(torch.rand(8, 4, device=ctx.device)).sum().backward()
        _sync(ctx)
        ok = t.tolist() == [1.0] * 3 and shared == {"epoch": 1} and gathered == [7]
        ok = ok and settled == ["ok"] and model.weight.grad is not None
        ctx.verdict(ok, "collectives", f"one-rank {backend} group: all-reduce, barrier, objects, "
                    "fail-together gather, DDP backward")  # fmt: skip
    finally:
        distributed.shutdown_distributed()


# -- one training step per method and precision ------------------------------------------------
class InputRecorder(nn.Module):
    """The train model, recording the batch the weights are trained on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach()
        return self.model(x)


def _counted_step(ctx: Context, step: Callable[[], Any]) -> tuple[Any, int | str]:
    """``step()`` and the host syncs it forced."""
    if not ctx.cuda:
        with count_host_syncs() as syncs:
            out = step()
        return out, syncs.total
    torch.cuda.synchronize(ctx.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return out, sum("synchroniz" in str(w.message) for w in caught)


def check_steps(ctx: Context) -> None:
    size, batch = (8, 8) if ctx.tiny else (32, 64)
    x = torch.rand(batch, 3, size, size, device=ctx.device)
    y = torch.randint(0, 10, (batch,), device=ctx.device)
    if ctx.cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    for name in method_names():
        # --tiny: every method in fp32, the autocast dtypes with fast only (seconds)
        amps = ("none", "bf16", "fp16") if not ctx.tiny or name == "fast" else ("none",)
        for amp in amps:
            _one_step(ctx, name, amp, x, y)


def _one_step(ctx: Context, name: str, amp: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step of method ``name`` under ``amp``, after one warm-up step."""
    eps = 0.5
    torch.manual_seed(0)
    spec = ModelSpec("small_cnn", 10, 3, x.shape[-1], [0.5] * 3, [0.25] * 3)
    model = build_model(spec).to(ctx.device).train()
    if ctx.cuda:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    recorder = InputRecorder(model)
    norms = method_class(name).norms  # a method without an L2 form runs under L-inf 8/255
    attack = (
        AttackConfig(method=name, eps=eps)
        if norms is None or "l2" in norms
        else AttackConfig(method=name, norm="linf", eps=8 / 255)
    )
    eps, threat = attack.eps, attack.threat()
    method = build_method(attack)
    method.start_epoch(0, 2)
    method.start_batch(torch.arange(len(x), device=x.device), len(x))  # per-sample buffers
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp == "fp16")
    autocast = autocast_context(amp, ctx.device)

    def step() -> torch.Tensor:
        loss, _ = training_step(
            recorder, model, method, opt, x, y, scaler=scaler, autocast=autocast
        )
        return loss

    step()
    if ctx.tiny and name != "fast":  # --tiny: the op trace (slow on a CPU) for fast only
        loss, syncs = step(), "not counted"
    else:
        loss, syncs = _counted_step(ctx, step)
    seen = recorder.seen
    assert seen is not None
    # trades trains on the clean and the adversarial batch at once, smoothadv on noisy copies
    copies = x.repeat(len(seen) // len(x), *([1] * (x.dim() - 1)))
    dist_ = float(threat.norm(seen.float() - copies).max())
    in_box = bool((seen >= 0).all() and (seen <= 1).all())
    # n-fgsm and n-aaer do not project back to eps: their noise radius plus one step bounds it;
    # fgsm-pco mixes in beta times the FGSM perturbation; Gaussian noise (gaussian, smoothadv)
    # is unbounded and unclamped by design, so it has no ball or box to stay in
    bound = eps
    if hasattr(method, "noise_factor"):
        bound = eps * method.noise_factor + getattr(method, "step_size", 0.0)
    if hasattr(method, "beta"):
        bound = max(1.0, float(method.beta)) * eps
    if hasattr(attack.options, "sigma"):
        bound, in_box = float("inf"), True
    problems = []
    if not bool(torch.isfinite(loss)):
        problems.append(f"loss {float(loss)}")
    if loss.device != ctx.device:
        problems.append(f"loss on {loss.device}")
    if dist_ > bound * (1 + 1e-3) + 1e-4 or not in_box:
        problems.append(f"batch outside the ball/box ({threat} {dist_:.4f}, box {in_box})")
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    if ctx.cuda and not conv.weight.is_contiguous(memory_format=torch.channels_last):
        problems.append("channels_last lost")
    message = (
        f"{name:<11} {amp:<4} loss {float(loss):.3f}, max ||delta|| {dist_:.3f} "
        f"(bound {bound:.3f}), {syncs} host syncs"
    )
    ctx.verdict(not problems, "step", message + ("; " + "; ".join(problems) if problems else ""),
                method=name, amp=amp, syncs=syncs)  # fmt: skip


# -- fit -> interrupt -> resume ----------------------------------------------------------------
def _digits(ctx: Context) -> Any:
    from fastrobust.data import load_dataset

    data = load_dataset("digits")
    if ctx.tiny:
        data = replace(data, train_x=data.train_x[:128], train_y=data.train_y[:128])
    return data


def _interrupted_and_resumed(ctx: Context, tag: str, **options: Any) -> float:
    """Max weight difference between an uninterrupted 2-epoch run and one stopped after the
    first epoch and resumed."""
    from fastrobust.checkpoint import load_checkpoint
    from fastrobust.training.epoch import EpochTrainer
    from fastrobust.training.trainer import fit, resume

    data = _digits(ctx)
    base = dict(
        epochs=2, batch_size=64, method="fast", eps=1.0, device=str(ctx.device), progress=False,
        eval_limit=50, eval_steps=2, overfit_check_size=32, out_dir=str(ctx.tmp / tag),
    ) | options  # fmt: skip
    full = fit(TrainConfig(**base, name="full"), dataset=data)
    original, calls = EpochTrainer.train_epoch, [0]

    def stop_in_second_epoch(self: Any, epoch: int, total: int) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return original(self, epoch, total)

    EpochTrainer.train_epoch = stop_in_second_epoch  # type: ignore[method-assign]
    try:
        part = fit(TrainConfig(**base, name="part"), dataset=data)
    finally:
        EpochTrainer.train_epoch = original  # type: ignore[method-assign]
    resumed = resume(part.run_dir, dataset=data)
    a = load_checkpoint(full.run_dir / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "last.pt")["model"]
    ctx.shared["run"] = resumed.run_dir
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def check_resume(ctx: Context) -> None:
    from fastrobust.checkpoint import load_model

    diff = _interrupted_and_resumed(ctx, "plain")
    if ctx.cuda:
        ctx.say(
            "INFO",
            "resume",
            f"resumed vs uninterrupted, default kernels: max |dw| {diff:.3g}",
            diff=diff,
        )
        diff = _interrupted_and_resumed(ctx, "deterministic", deterministic=True)
    ctx.verdict(diff == 0.0, "resume", f"resumed vs uninterrupted{' (deterministic)' if ctx.cuda else ''}: "
                f"max |dw| {diff:.3g}", diff=diff)  # fmt: skip
    run = ctx.shared["run"]
    here, cpu = load_model(run, device=ctx.device), load_model(run, device="cpu")
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        gap = float((here(x.to(ctx.device)).cpu() - cpu(x)).abs().max())
    ctx.verdict(
        gap < 1e-3, "resume", f"checkpoint reloaded on the CPU: max logit difference {gap:.2g}"
    )


# -- compile -----------------------------------------------------------------------------------
def _time(ctx: Context, fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        _sync(ctx)
        t0 = time.perf_counter()
        fn()
        _sync(ctx)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def check_compile(ctx: Context) -> None:
    from torch._inductor.compile_fx import compile_fx

    torch.manual_seed(0)
    spec = ModelSpec("preact_resnet18", 10, 3, 32, [0.5] * 3, [0.25] * 3)
    model = build_model(spec).to(ctx.device).eval()
    x = torch.rand(128, 3, 32, 32, device=ctx.device)
    y = torch.randint(0, 10, (128,), device=ctx.device)
    compiled = compile_static(InputGradientsOnly(model))

    def attack(m: Any) -> Callable[[], Any]:
        return lambda: pgd(m, x, y, L2(0.5), steps=7)

    repeats = 3 if ctx.quick else 7
    eager_s, compiled_s = _time(ctx, attack(model), repeats), _time(ctx, attack(compiled), repeats)
    ctx.say("INFO", "compile", f"PGD-7 on 128 CIFAR images (PreAct-ResNet-18): eager {eager_s * 1e3:.1f} ms, "
            f"compiled {compiled_s * 1e3:.1f} ms ({eager_s / compiled_s:.2f}x)", eager_s=eager_s,
            compiled_s=compiled_s)  # fmt: skip
    graphs = [0]

    def counting(gm: torch.fx.GraphModule, example: Any) -> Any:
        graphs[0] += 1
        return compile_fx(gm, example)

    static = compile_static(
        nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).to(ctx.device), counting
    )
    for n in (128, 128, 100, 128, 100):
        static(x[:n])
    ctx.verdict(
        graphs[0] == 2,
        "compile",
        f"full and partial batches: {graphs[0]} static graphs (2 expected)",
    )


# -- AutoAttack GPU vs CPU ---------------------------------------------------------------------
def check_autoattack(ctx: Context) -> None:
    from fastrobust.checkpoint import load_model
    from fastrobust.data import load_dataset
    from fastrobust.evaluation.curve import robustness_curve
    from fastrobust.evaluation.settings import CurveSettings

    run = ctx.shared.get("run")
    if run is None:
        ctx.say("SKIP", "autoattack", "no trained run (the resume check failed)")
        return
    data = load_dataset("digits")
    settings = CurveSettings(attacks=["autoattack"], limit=50 if ctx.quick else 100)
    curves = {}
    for where in (ctx.device, torch.device("cpu")):
        model = load_model(run, device=where)
        t0 = time.perf_counter()
        curves[where.type] = robustness_curve(model, data, "l2", [0.5, 1.0], settings, device=where)
        ctx.say("INFO", "autoattack", f"on {where}: robust {curves[where.type].robust} "
                f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    gpu, cpu = curves["cuda"], curves["cpu"]
    ctx.verdict(
        gpu.robust == cpu.robust, "autoattack", f"robust counts GPU {gpu.robust}, CPU {cpu.robust}"
    )
    false = [w for w in gpu.warnings if "determin" in w]
    ctx.verdict(not false, "autoattack", f"masking warnings on the GPU: {gpu.warnings or 'none'}")


# -- throughput --------------------------------------------------------------------------------
def check_throughput(ctx: Context) -> None:
    torch.manual_seed(0)
    batch = 128
    spec = ModelSpec("resnet50", 10, 3, 32, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    model = build_model(spec).to(ctx.device).train()
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, 32, 32, device=ctx.device).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 10, (batch,), device=ctx.device)
    methods = {
        "standard": build_method(AttackConfig(method="standard", eps=0.5)),
        "fast": build_method(AttackConfig(method="fast", eps=0.5)),
        "pgd7": build_method(AttackConfig(method="pgd", eps=0.5, steps=7)),
    }
    autocast = autocast_context("bf16", ctx.device)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(1 + (5 if ctx.quick else 15)):  # interleaved; the first is warm-up
        for name, method in methods.items():
            _sync(ctx)
            t0 = time.perf_counter()
            training_step(model, model, method, opt, x, y, autocast=autocast)
            _sync(ctx)
            if repeat:
                times[name].append(time.perf_counter() - t0)
    rate = {name: batch / statistics.median(ts) for name, ts in times.items()}
    for name, r in rate.items():
        ratio = rate["standard"] / r
        floor = FLOORS.get(name)
        extra = (
            f", {ratio:.2f}x standard (floor {floor:.2f}: {ratio / floor:.2f}x the floor)"
            if floor
            else ""
        )
        ctx.say("INFO", "throughput", f"ResNet-50 CIFAR bf16+channels_last {name}: {r:.0f} images/s{extra}",
                method=name, images_per_s=r)  # fmt: skip
    ctx.say("INFO", "throughput", f"fast training: {rate['fast'] / PAPER_IMAGES_PER_S:.2f}x the paper's "
            f"~{PAPER_IMAGES_PER_S:.0f} images/s on two V100s (one GPU here)")  # fmt: skip


CHECKS: list[tuple[str, Callable[[Context], None], bool]] = [  # name, check, needs CUDA
    ("env", check_env, False),
    ("collectives", check_collectives, False),
    ("step", check_steps, False),
    ("resume", check_resume, False),
    ("compile", check_compile, True),
    ("autoattack", check_autoattack, True),
    ("throughput", check_throughput, True),
]


def run_checks(ctx: Context) -> int:
    """Every check in order; returns the exit status (1 on any FAIL)."""
    started = time.perf_counter()
    for name, check, needs_cuda in CHECKS:
        if needs_cuda and not ctx.cuda:
            ctx.say("SKIP", name, "needs a CUDA device")
            continue
        t0 = time.perf_counter()
        try:
            check(ctx)
        except Exception as exc:  # one broken check must not hide the others
            ctx.say("FAIL", name, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            traceback.print_exc(limit=4)
        ctx.say("INFO", name, f"{time.perf_counter() - t0:.1f} s")
    counts = {v: sum(line["verdict"] == v for line in ctx.lines) for v in ("PASS", "FAIL", "SKIP")}
    print(f"SUMMARY {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP "
          f"in {time.perf_counter() - started:.0f} s on {ctx.device}")  # fmt: skip
    return 1 if counts["FAIL"] else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="fewer repeats and points (under 5 min)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (the test suite's CPU run)")
    p.add_argument("--out", help="folder for gpu_check.json")
    args = p.parse_args(argv)
    device = distributed.resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(device, quick=args.quick or args.tiny, tiny=args.tiny, tmp=Path(tmp))
        status = run_checks(ctx)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(ctx.lines, indent=1, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
