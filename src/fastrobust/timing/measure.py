"""Where the time of adversarial training goes (Goodwin et al., HPEC 2020, Figure 1).

* :func:`measure_curves`: seconds of one forward pass ("no PGD"), one training step
  (forward + backward + SGD step) and one execution of a K-step PGD attack (default
  K in {1, 7}) over batch sizes, on the current device (Figure 1, left). GPUs are
  synchronised around every timed call; each point is the median of ``repeats`` calls after
  ``warmup`` untimed ones.
* :func:`estimate_training_time`: a lower bound on the total training time for a dataset
  size, number of epochs and validation schedule, from those curves: over batch sizes
  (Figure 1, middle) and over GPU counts with a fixed global batch (Figure 1, right). With G
  data-parallel processes each one runs ``ceil(N/G)`` images per epoch in batches of
  ``global_batch / G`` (the engine's DistributedSampler split), so the per-process batch
  shrinks as G grows and the per-batch-size curve says what that costs. Communication and
  data loading are left out, which is what makes it a lower bound.

The paper's Table I from run folders is in :mod:`fastrobust.timing.runs_table`, the Figure 1 plot in
:mod:`fastrobust.timing.plot`.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from fastrobust.attacks.contract import BNMode, pgd_step_size
from fastrobust.attacks.threat import ThreatModel
from fastrobust.errors import ConfigError
from fastrobust.timing.settings import TimingSettings
from fastrobust.training.adversaries import Adversary
from fastrobust.training.methods import Standard, steps_label
from fastrobust.training.step import autocast_context, training_step

log = logging.getLogger(__name__)
#: the defaults of the measurement (written once, in the settings)
_DEFAULTS = TimingSettings()

FORWARD, TRAIN_STEP = "forward", "train_step"


def attack_op(steps: int) -> str:
    """Name of the measured operation "one K-step PGD attack"."""
    return f"pgd{steps}"


# -- measuring ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """Seconds of one call of ``op`` at ``batch_size`` (median and fastest of ``repeats``)."""

    op: str
    batch_size: int
    median_s: float
    min_s: float
    repeats: int


def _interp_loglog(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Piecewise-linear in log-log between measured points; outside them, a constant cost per
    image from the nearest end (time proportional to the batch)."""
    if x <= xs[0]:
        return ys[0] * x / xs[0]
    if x >= xs[-1]:
        return ys[-1] * x / xs[-1]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp(math.log(y0) + t * (math.log(y1) - math.log(y0)))
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class TimingCurves:
    """Measured seconds per call over batch sizes for each operation, on one device."""

    device: str
    model: str
    image_shape: tuple[int, int, int]
    rows: list[Measurement] = field(default_factory=list)

    def ops(self) -> list[str]:
        """forward, train_step, then the attacks by number of steps."""
        order = {FORWARD: -2, TRAIN_STEP: -1}
        return sorted(
            {r.op for r in self.rows}, key=lambda op: order[op] if op in order else int(op[3:])
        )

    def batch_sizes(self, op: str) -> list[int]:
        return sorted(r.batch_size for r in self.rows if r.op == op)

    def seconds(self, op: str, batch_size: float) -> float:
        """Seconds of one ``op`` call at any batch size (interpolated in log-log)."""
        pts = sorted((r.batch_size, r.median_s) for r in self.rows if r.op == op)
        if not pts:
            raise ConfigError(f"no measurement of {op!r}; measured: {', '.join(self.ops())}")
        if batch_size <= 0:
            return 0.0
        return _interp_loglog([p[0] for p in pts], [max(p[1], 1e-12) for p in pts], batch_size)

    def attack_steps_measured(self) -> list[int]:
        return sorted(int(op[3:]) for op in self.ops() if op.startswith("pgd"))

    def attack_seconds(self, steps: int, batch_size: float) -> float:
        """Seconds of one ``steps``-step PGD attack. Unmeasured K: a line through the measured
        K (each step is one forward and one input-gradient backward, so the cost is affine in
        K); with one measured K, proportional to K."""
        if steps == 0 or batch_size <= 0:
            return 0.0
        measured = self.attack_steps_measured()
        if steps in measured:
            return self.seconds(attack_op(steps), batch_size)
        if not measured:
            raise ConfigError("no PGD attack was measured")
        ts = [self.seconds(attack_op(k), batch_size) for k in measured]
        if len(measured) == 1:
            return ts[0] * steps / measured[0]
        k_mean, t_mean = statistics.fmean(measured), statistics.fmean(ts)
        var = sum((k - k_mean) ** 2 for k in measured)
        slope = max(sum((k - k_mean) * (t - t_mean) for k, t in zip(measured, ts)) / var, 0.0)
        return max(t_mean + slope * (steps - k_mean), 0.0)

    def to_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["device", "model", "op", "batch_size", "median_s", "min_s", "repeats"])
            for r in sorted(self.rows, key=lambda r: (r.op, r.batch_size)):
                w.writerow(
                    [self.device, self.model, r.op, r.batch_size, r.median_s, r.min_s, r.repeats]
                )

    @classmethod
    def from_csv(cls, path: str | Path) -> TimingCurves:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            raise ConfigError(f"{path} holds no measurements")
        curves = cls(device=rows[0]["device"], model=rows[0]["model"], image_shape=(0, 0, 0))
        for r in rows:
            size, median, fastest = int(r["batch_size"]), float(r["median_s"]), float(r["min_s"])
            curves.rows.append(Measurement(r["op"], size, median, fastest, int(r["repeats"])))
        return curves


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any],
    device: torch.device,
    *,
    repeats: int,
    warmup: int,
    min_sample_s: float = 0.02,
) -> tuple[float, float]:
    """(median, min) seconds of one ``fn()`` call over ``repeats`` samples, after ``warmup``
    untimed calls. The device is synchronised before and after each sample (so queued GPU
    kernels are counted); a sample runs ``fn`` enough times to last ``min_sample_s``, so
    millisecond calls are not lost in timer and launch noise."""
    for _ in range(warmup):
        fn()

    def sample(number: int) -> float:
        _synchronize(device)
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        _synchronize(device)
        return (time.perf_counter() - t0) / number

    first = sample(1)
    number = max(1, min(1000, math.ceil(min_sample_s / max(first, 1e-9))))
    times = [first] if number == 1 else []
    times += [sample(number) for _ in range(repeats - len(times))]
    return statistics.median(times), min(times)


def measure_curves(
    model: nn.Module,
    *,
    image_shape: tuple[int, int, int],
    num_classes: int,
    batch_sizes: Iterable[int],
    threat: ThreatModel,
    steps: Iterable[int] | None = None,
    device: torch.device | str = "cpu",
    repeats: int = _DEFAULTS.repeats,
    warmup: int = _DEFAULTS.warmup,
    amp: str = "none",
    channels_last: bool = False,
    bn_mode: BNMode = "eval",
    name: str | None = None,
) -> TimingCurves:
    """Time one forward pass, one training step and one K-step PGD attack per batch size.

    The training step is the engine's own :func:`fastrobust.training.step.training_step` (on a copy
    of ``model``, whose weights are left untouched); attacks are the training adversary with
    ``alpha = 2.5 eps / K``. Inputs are random images in ``[0,1]``: the cost does not depend
    on their content. On a GPU a batch size that runs out of memory ends the sweep there.
    ``steps``, ``repeats`` and ``warmup`` default to :class:`TimingSettings`'.
    """
    device = torch.device(device)
    batch_sizes = sorted(set(int(b) for b in batch_sizes))
    steps = sorted(set(int(k) for k in (_DEFAULTS.steps if steps is None else steps)))
    if not batch_sizes or batch_sizes[0] < 1:
        raise ConfigError("batch sizes must be >= 1")
    if repeats < 1 or warmup < 0 or any(k < 1 for k in steps):
        raise ConfigError("need repeats >= 1, warmup >= 0 and attack steps >= 1")
    work = _copy_to(model, device, channels_last)
    optimizer = torch.optim.SGD(work.parameters(), lr=0.0, momentum=0.9, weight_decay=5e-4)
    no_attack = Standard()
    eps = cast(float, threat.eps)  # a timing threat has one radius
    attacks = {
        k: Adversary(threat, steps=k, step_size=pgd_step_size(eps, k), bn_mode=bn_mode)
        for k in steps
    }
    curves = TimingCurves(
        device=describe_device(device),
        model=name or type(model).__name__,
        image_shape=cast("tuple[int, int, int]", tuple(image_shape)),
    )
    for b in batch_sizes:
        x = torch.rand(b, *image_shape, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, num_classes, (b,), device=device)

        def forward(x: torch.Tensor = x) -> None:
            work.eval()
            with torch.no_grad(), autocast_context(amp, device):
                work(x)
            work.train()

        def train(x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            training_step(
                work, work, no_attack, optimizer, x, y, autocast=autocast_context(amp, device)
            )

        ops: list[tuple[str, Callable[[], Any]]] = [(FORWARD, forward), (TRAIN_STEP, train)]
        for k, adversary in attacks.items():

            def attack(x: torch.Tensor = x, y: torch.Tensor = y, a: Adversary = adversary) -> None:
                with autocast_context(amp, device):
                    a(work, x, y)

            ops.append((attack_op(k), attack))
        try:
            for op, fn in ops:
                median, fastest = time_call(fn, device, repeats=repeats, warmup=warmup)
                curves.rows.append(Measurement(op, b, median, fastest, repeats))
                log.info("%-10s batch %5d: %.4f s", op, b, median)
        except torch.cuda.OutOfMemoryError:
            curves.rows = [r for r in curves.rows if r.batch_size != b]
            torch.cuda.empty_cache()
            log.warning("batch size %d does not fit in GPU memory; stopping the sweep there", b)
            break
    return curves


def _copy_to(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    import copy

    work = copy.deepcopy(model).to(device)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stub lacks memory_format
    return work.train()


def describe_device(device: torch.device) -> str:
    """A human-readable name of the device (GPU model, or the CPU and its thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu} ({torch.get_num_threads()} threads)"


# -- estimating -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """What a training run does: images, epochs and the validation the engine runs."""

    train_size: int
    """training images per epoch"""
    val_size: int
    """test images validated (clean + PGD) at each validation"""
    epochs: int
    eval_every: int = 1
    """validate every this many epochs and at the last one"""
    eval_steps: int = 10
    """PGD steps of the validation attack"""
    check_size: int = 256
    """training images of the catastrophic-overfitting check (rank 0; 0: none)"""
    check_every: int = 1
    """run the check every this many epochs (the run's resolved ``overfit_check_every``)"""
    eval_batch_min: int = 256
    """validation batch per process: max(global batch, this), as in the engine"""

    def __post_init__(self) -> None:
        if min(self.train_size, self.epochs, self.eval_every, self.check_every) < 1:
            raise ConfigError("need train_size, epochs, eval_every, check_every >= 1")
        if self.val_size < 0:
            raise ConfigError("need val_size >= 0")

    @property
    def validations(self) -> int:
        """How many epochs end with a validation."""
        return sum(
            1 for e in range(1, self.epochs + 1) if e % self.eval_every == 0 or e == self.epochs
        )


@dataclass(frozen=True)
class Estimate:
    """Lower bound on one run's wall-clock time, split into training and validation."""

    method: str
    attack_steps: int
    global_batch: int
    gpus: int
    train_s: float
    val_s: float

    @property
    def total_s(self) -> float:
        return self.train_s + self.val_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_s"] = self.total_s
        d["total_h"] = self.total_s / 3600
        return d


def _batches(n: int, batch: int) -> list[int]:
    """Sizes of the batches ``n`` images make (the last one may be partial)."""
    full, rest = divmod(n, batch)
    return [batch] * full + ([rest] if rest else [])


def estimate_training_time(
    curves: TimingCurves,
    schedule: Schedule,
    *,
    attack_steps: int,
    global_batch: int,
    gpus: int = 1,
) -> Estimate:
    """Lower bound on total training time (the paper's Figure 1, middle and right).

    Per epoch and process: ``ceil(N/G)`` images in batches of ``global_batch/G``, each costing
    one attack plus one training step; every ``eval_every`` epochs (and at the last) the
    process's share of the test set in batches of ``max(global_batch, 256)``, each costing two
    forward passes and one ``eval_steps``-step PGD; every ``check_every`` epochs the overfitting
    check.
    """
    if gpus < 1 or global_batch < 1 or global_batch % gpus:
        raise ConfigError(f"global batch {global_batch} does not divide over {gpus} GPUs")
    if attack_steps < 0:
        raise ConfigError("attack steps must be >= 0")
    per_gpu = global_batch // gpus

    def step_s(b: int) -> float:
        return curves.attack_seconds(attack_steps, b) + curves.seconds(TRAIN_STEP, b)

    def eval_s(b: int) -> float:
        return 2 * curves.seconds(FORWARD, b) + curves.attack_seconds(schedule.eval_steps, b)

    epoch = sum(step_s(b) for b in _batches(math.ceil(schedule.train_size / gpus), per_gpu))
    val_batch = max(global_batch, schedule.eval_batch_min)
    val_once = sum(eval_s(b) for b in _batches(math.ceil(schedule.val_size / gpus), val_batch))
    check = eval_s(schedule.check_size) - curves.seconds(FORWARD, schedule.check_size)
    return Estimate(
        method=steps_label(attack_steps),
        attack_steps=attack_steps,
        global_batch=global_batch,
        gpus=gpus,
        train_s=schedule.epochs * epoch,
        val_s=schedule.validations * val_once + schedule.epochs // schedule.check_every * check,
    )


def sweep_batch_sizes(
    curves: TimingCurves,
    schedule: Schedule,
    *,
    methods: Sequence[int],
    batch_sizes: Sequence[int],
    gpus: int = 1,
) -> list[Estimate]:
    """Estimates over global batch sizes (Figure 1, middle); sizes ``gpus`` does not divide
    are left out."""
    return [
        estimate_training_time(curves, schedule, attack_steps=k, global_batch=b, gpus=gpus)
        for k in methods
        for b in sorted(batch_sizes)
        if b % gpus == 0
    ]


def sweep_gpus(
    curves: TimingCurves,
    schedule: Schedule,
    *,
    methods: Sequence[int],
    global_batch: int,
    gpus: Sequence[int],
) -> list[Estimate]:
    """Estimates over GPU counts for a fixed global batch (Figure 1, right); counts that do
    not divide the global batch are left out."""
    return [
        estimate_training_time(curves, schedule, attack_steps=k, global_batch=global_batch, gpus=g)
        for k in methods
        for g in sorted(gpus)
        if global_batch % g == 0
    ]


def write_estimates_csv(estimates: Sequence[Estimate], path: str | Path) -> None:
    keys = [
        "method",
        "attack_steps",
        "global_batch",
        "gpus",
        "train_s",
        "val_s",
        "total_s",
        "total_h",
    ]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for e in estimates:
            w.writerow(e.to_dict())
