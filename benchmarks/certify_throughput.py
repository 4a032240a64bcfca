"""Certification throughput (``certify_points``) against a bare batched forward loop.

Both run the same model over the same number of noisy samples per point (n0 + n) in forward
passes of ``batch_size``: the bare loop adds pre-drawn noise and takes the argmax, nothing
else; certification also draws the noise from each point's seeded generator, counts the
classes and computes the Clopper-Pearson bound and the radius. Timings are interleaved (bare,
certify, repeat) and the median of each is reported with their ratio (target, issue 23:
certification at least 85% of the bare loop's images per second). On a CPU shared with other
work the ratio is taken in process CPU time (the wall-clock time also counts waits for a core);
the wall-clock times are shown too.

    python benchmarks/certify_throughput.py [--run RUN] [--points 20] [--n0 100] [--n 10000]
        [--batch-size 1000] [--sigma 0.25] [--repeats 3] [--threads 1]

Without ``--run`` it times an untrained small_cnn (the cost does not depend on the weights).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fastrobust.checkpoint import load_model
from fastrobust.data import load_dataset
from fastrobust.data.base import to_float
from fastrobust.models import ModelSpec, build_model
from fastrobust.smoothing import Smoothing, certify_points


@torch.no_grad()
def bare_loop(
    model: torch.nn.Module, x: torch.Tensor, noise: torch.Tensor, per_point: int, batch: int
) -> None:
    """``per_point`` noisy forwards per point in passes of ``batch`` (noise drawn beforehand)."""
    for i in range(len(x)):
        left = per_point
        while left > 0:
            size = min(batch, left)
            model(x[i].unsqueeze(0) + noise[:size]).argmax(1)
            left -= size


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run", default=None)
    p.add_argument("--points", type=int, default=20)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = load_dataset("digits")
    model = load_model(a.run) if a.run else build_model(ModelSpec("small_cnn", 10, 1, 8))
    model.eval()
    x, y = to_float(data.test_x[: a.points]), data.test_y[: a.points]
    noise = torch.randn(a.batch_size, *x.shape[1:]) * a.sigma
    s = Smoothing(a.sigma, a.n0, a.n, 0.001, a.batch_size)
    times: dict[str, list[float]] = {"bare": [], "certify": []}
    wall: dict[str, list[float]] = {"bare": [], "certify": []}
    for _ in range(a.repeats):
        c, t = time.process_time(), time.perf_counter()
        bare_loop(model, x, noise, a.n0, a.batch_size)
        bare_loop(model, x, noise, a.n, a.batch_size)
        times["bare"].append(time.process_time() - c)
        wall["bare"].append(time.perf_counter() - t)
        c, t = time.process_time(), time.perf_counter()
        certify_points(model, x, y, s)
        times["certify"].append(time.process_time() - c)
        wall["certify"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    wall_med = {k: statistics.median(v) for k, v in wall.items()}
    samples = a.points * (a.n0 + a.n)
    print(
        f"{a.points} points x (n0 {a.n0} + n {a.n}) = {samples} noisy samples, batch {a.batch_size}, {a.threads} thread(s), median of {a.repeats}"
    )
    for k, v in med.items():
        print(
            f"{k:>8}: {v:.3f} cpu s  {a.points / v:.2f} images/s  {samples / v:.0f} samples/s"
            f"  (wall {wall_med[k]:.3f} s; cpu runs: {', '.join(f'{t:.3f}' for t in times[k])})"
        )
    for clock, m in (("CPU", med), ("wall", wall_med)):
        print(f"certify / bare images per second ({clock} time): {m['bare'] / m['certify']:.3f}")


if __name__ == "__main__":
    main()
