"""JPEG decoding speed per DataLoader worker: full-resolution decode vs Pillow draft mode.

Generates a folder of photo-like JPEGs (default 500x375, quality 90: the typical ImageNet photo;
1/f "pink" noise with correlated colour channels and a few hard edges, so file sizes and
decoding work resemble real photographs), then times ``decode_image`` (decode, resize of the
shorter side to ``size`` or, from 64 px on, ``size * 256/224``, centre crop, uint8 tensor) for each output size with draft mode off and on, and
the training view (random-resized crop of the draft-decoded photo + flip), in one process with
one thread: what one DataLoader worker does. Rates are images per CPU second
of the process (robust to other jobs on a shared machine); runs are interleaved (off, on, off,
...) and the median is reported. From the per-worker rate it prints how many workers keep
up with a GPU consuming the paper's ~720 images/s (Goodwin et al., HPEC 2020: 150 CIFAR-10
epochs in 2.9 h on two V100s) and 10x that.

    python benchmarks/decode.py [--images 200] [--source 500x375] [--sizes 64,128,224]

``--eval-pass`` instead times an evaluation pass over the generated folder (the evaluation
view at the first ``--sizes`` size) decoded in the main process (``--workers 0``) and by
DataLoader workers (:func:`fastrobust.data.disk_loader.decoded_batches`): the decoding alone,
the pass (per batch a clean forward and a short PGD of an untrained small_cnn), and the time
the main process spent on getting its batches within it; wall-clock seconds, the worker counts
interleaved in every repeat:

    python benchmarks/decode.py --eval-pass [--images 200] [--sizes 64] [--workers 0,2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastrobust.data.disk_loader import decoded_batches
from fastrobust.data.imagefolder import LazyImages, decode_image
from fastrobust.data.imagenet_augment import (
    EVAL_RESIZE_RATIO,
    MIN_SIZE,
    ResizedCropOptions,
    augment_file,
)

PAPER_RATE = 720.0
"""images/s of the paper's fast CIFAR-10 training (two V100s)"""


def photo_like(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A ``height x width x 3`` uint8 picture with a photograph's 1/f spectrum and some edges."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(width, height))
    channels = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
        field = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(height, width))
        channels.append((field - field.mean()) / field.std())
    mixing = np.eye(3) * 0.4 + 0.6 * rng.uniform(0.5, 1.0, (3, 3))  # correlated colours
    img = np.einsum("ij,jhw->hwi", mixing / mixing.sum(1, keepdims=True), np.stack(channels))
    y, x = np.mgrid[0:height, 0:width]
    for _ in range(3):  # objects with hard edges
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 120)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r**2] += rng.normal(0, 1.0, 3)
    img = 0.5 + 0.18 * img
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_folder(folder: Path, n: int, width: int, height: int, quality: int) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        path = folder / f"img_{i:04d}.jpg"
        Image.fromarray(photo_like(width, height, rng)).save(path, quality=quality)
        files.append(path)
    return files


def images_per_second(files: list[Path], size: int, draft: bool) -> float:
    """Images per CPU second of this process (other jobs on a shared machine do not count)."""
    t0 = time.process_time()
    ratio = EVAL_RESIZE_RATIO if size >= MIN_SIZE else 1.0  # the evaluation view
    for path in files:
        decode_image(path, size, 3, draft=draft, resize_ratio=ratio)
    return len(files) / (time.process_time() - t0)


def train_views_per_second(files: list[Path], size: int) -> float:
    """The training path: random-resized crop (draft-decoded) + flip, per CPU second."""
    options = ResizedCropOptions()
    t0 = time.process_time()
    for seed, path in enumerate(files):
        augment_file(path, size, 3, seed, options)
    return len(files) / (time.process_time() - t0)


def eval_pass_seconds(
    images: LazyImages, model: torch.nn.Module, workers: int, batch_size: int, steps: int
) -> tuple[float, float, float]:
    """Wall seconds of (decoding every image batch by batch; an evaluation pass: per batch a
    clean forward and ``steps``-step L2 PGD, what a robustness curve does per chunk and eps;
    the part of that pass the main process spent decoding or waiting for a batch) with
    ``workers`` DataLoader processes (0: this process decodes)."""
    from fastrobust.attacks.projected_gradient import pgd
    from fastrobust.attacks.threat import threat_model

    t0 = time.perf_counter()
    for _ in decoded_batches(images, batch_size, workers=workers):
        pass
    decode = time.perf_counter() - t0
    threat = threat_model("l2", 0.5)
    labels = torch.arange(len(images)) % 10
    waited = 0.0
    t0 = time.perf_counter()
    batches = decoded_batches(images, batch_size, workers=workers)
    for lo in range(0, len(images), batch_size):
        t1 = time.perf_counter()
        x = next(batches).float().div_(255)
        waited += time.perf_counter() - t1
        y = labels[lo : lo + batch_size]
        with torch.no_grad():
            model(x).argmax(1)
        pgd(model, x, y, threat, steps=steps, step_size=2.5 * 0.5 / steps)
    return decode, time.perf_counter() - t0, waited


def eval_pass(files: list[Path], size: int, workers: list[int], repeats: int) -> None:
    """Print the median of :func:`eval_pass_seconds` per worker count, interleaved."""
    from fastrobust.models import ModelSpec, build_model

    ratio = EVAL_RESIZE_RATIO if size >= MIN_SIZE else 1.0
    images = LazyImages(files, size, 3, resize_ratio=ratio)
    batch_size, steps = 50, 3
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", 10, 3, size, [0.5] * 3, [0.25] * 3)).eval()
    print(
        f"evaluation pass over {len(files)} images at {size} px in batches of {batch_size}: "
        f"untrained small_cnn, clean forward + {steps}-step L2 PGD per batch; "
        f"{torch.get_num_threads()} torch threads; wall-clock s, median of {repeats} "
        "interleaved repeats"
    )
    times: dict[int, list[tuple[float, float, float]]] = {w: [] for w in workers}
    eval_pass_seconds(images.take(range(batch_size)), model, 0, batch_size, steps)  # warm-up
    for _ in range(repeats):
        for w in workers:
            times[w].append(eval_pass_seconds(images, model, w, batch_size, steps))
    print(
        f"{'workers':>8} {'decode alone s':>15} {'eval pass s':>12} "
        f"{'main process on batches s':>26} {'eval pass vs first':>19}"
    )
    base = statistics.median(t[1] for t in times[workers[0]])
    for w in workers:
        decode, whole, waited = (statistics.median(t[k] for t in times[w]) for k in range(3))
        print(f"{w:>8} {decode:>15.2f} {whole:>12.2f} {waited:>26.2f} {base / whole:>18.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--source", default="500x375", help="generated JPEG size, WIDTHxHEIGHT")
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--sizes", default="64,128,224")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--eval-pass", action="store_true", help="time an evaluation pass instead")
    p.add_argument("--workers", default="0,2", help="worker counts of --eval-pass")
    args = p.parse_args()
    width, height = (int(v) for v in args.source.lower().split("x"))
    sizes = [int(s) for s in args.sizes.split(",")]
    if not args.eval_pass:
        torch.set_num_threads(1)  # one DataLoader worker

    with tempfile.TemporaryDirectory() as tmp:
        files = make_folder(Path(tmp), args.images, width, height, args.quality)
        if args.eval_pass:
            workers = [int(w) for w in args.workers.split(",")]
            return eval_pass(files, sizes[0], workers, args.repeats)
        kib = statistics.mean(f.stat().st_size for f in files) / 1024
        print(
            f"{len(files)} JPEGs {width}x{height} quality {args.quality}, mean {kib:.0f} KiB; "
            f"1 process, 1 thread, CPU time; median of {args.repeats} interleaved passes"
        )
        header = (
            f"{'size':>5} {'full img/s':>11} {'draft img/s':>12} {'speedup':>8} "
            f"{'workers @720/s full/draft':>26} {'@7200/s full/draft':>19} "
            f"{'train crop img/s':>17} {'workers @720/7200':>18}"
        )
        print(header)
        for size in sizes:
            images_per_second(files[:10], size, True)  # warm-up
            rates: dict[bool, list[float]] = {False: [], True: []}
            train_rates = []
            for _ in range(args.repeats):
                for draft in (False, True):
                    rates[draft].append(images_per_second(files, size, draft))
                train_rates.append(train_views_per_second(files, size))
            full, fast = statistics.median(rates[False]), statistics.median(rates[True])
            train = statistics.median(train_rates)
            need = [
                math.ceil(rate / r) for rate in (PAPER_RATE, 10 * PAPER_RATE) for r in (full, fast)
            ]
            print(
                f"{size:>5} {full:>11.1f} {fast:>12.1f} {fast / full:>7.2f}x "
                f"{need[0]:>18} / {need[1]:<5} {need[2]:>11} / {need[3]:<5} "
                f"{train:>17.1f} {math.ceil(PAPER_RATE / train):>8} / "
                f"{math.ceil(10 * PAPER_RATE / train):<5}"
            )


if __name__ == "__main__":
    main()
