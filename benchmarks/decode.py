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

from fastrobust.data.imagefolder import decode_image
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--source", default="500x375", help="generated JPEG size, WIDTHxHEIGHT")
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--sizes", default="64,128,224")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    width, height = (int(v) for v in args.source.lower().split("x"))
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.set_num_threads(1)  # one DataLoader worker

    with tempfile.TemporaryDirectory() as tmp:
        files = make_folder(Path(tmp), args.images, width, height, args.quality)
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
