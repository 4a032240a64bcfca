"""Image grids for figures: nearest-neighbour upscaling, labelled PNGs, raw tensors on disk.

Small images (8x8 digits, 32x32 CIFAR) are upscaled by repeating pixels, never interpolated,
so what the figure shows is exactly what the model saw.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: displayed images are upscaled to at least this many pixels on their shorter side
MIN_DISPLAY_PX = 64


def upscale_factor(height: int, width: int, min_px: int = MIN_DISPLAY_PX) -> int:
    """Smallest integer factor that makes the shorter side at least ``min_px`` pixels."""
    return max(1, math.ceil(min_px / max(1, min(height, width))))


def upscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour upscaling of ``... x H x W`` images by an integer factor (no blur)."""
    if factor <= 1:
        return x
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def tile(
    cells: Sequence[Sequence[torch.Tensor | None]], *, factor: int, pad: int = 2
) -> np.ndarray:
    """Rows of ``C x H x W`` images in ``[0,1]`` (None: empty) as one ``H' x W' x 3`` array.

    Images are upscaled by ``factor`` and separated by ``pad`` white pixels; grey images are
    shown in grey, 3-channel ones in colour.
    """
    first = next((c for row in cells for c in row if c is not None), None)
    if first is None:
        raise ValueError("nothing to tile")
    h, w = first.shape[-2] * factor, first.shape[-1] * factor
    n_rows, n_cols = len(cells), max(len(row) for row in cells)
    grid = np.ones((pad + n_rows * (h + pad), pad + n_cols * (w + pad), 3), dtype=np.float32)
    for r, row in enumerate(cells):
        for c, img in enumerate(row):
            if img is None:
                continue
            big = upscale(img.detach().float().cpu().clamp(0, 1), factor)
            if big.shape[0] == 1:
                big = big.expand(3, -1, -1)
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            grid[top : top + h, left : left + w] = big[:3].permute(1, 2, 0).numpy()
    return grid


def save_grid(
    path: str | Path,
    cells: Sequence[Sequence[torch.Tensor | None]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    min_px: int = MIN_DISPLAY_PX,
) -> Path:
    """Write a labelled PNG grid of images (rows x columns) with matplotlib's Agg backend.

    ``captions`` (same layout as ``cells``) are printed under each image in small type.
    """
    from matplotlib.figure import Figure

    first = next(c for row in cells for c in row if c is not None)
    factor = upscale_factor(first.shape[-2], first.shape[-1], min_px)
    pad = max(2, factor // 2)
    grid = tile(cells, factor=factor, pad=pad)
    cell_h, cell_w = first.shape[-2] * factor + pad, first.shape[-1] * factor + pad
    dpi = 100
    caption_px = 14 if captions else 0
    if captions:  # room under each row for its captions
        grid = _with_caption_space(grid, len(cells), cell_h, pad, caption_px)
        cell_h += caption_px
    fig = Figure(figsize=(grid.shape[1] / dpi + 1.6, grid.shape[0] / dpi + 0.8), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid, interpolation="nearest")
    centre = [pad + i * cell_h + (cell_h - pad - caption_px) / 2 for i in range(len(cells))]
    ax.set_yticks(centre[: len(row_labels)] if row_labels else [])
    if row_labels:
        ax.set_yticklabels(list(row_labels), fontsize=9)
    n_cols = max(len(row) for row in cells)
    ax.set_xticks(
        [pad + j * cell_w + (cell_w - pad) / 2 for j in range(n_cols)][: len(col_labels)]
        if col_labels
        else []
    )
    if col_labels:
        ax.set_xticklabels(list(col_labels), fontsize=9)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if captions:
        for r, row in enumerate(captions):
            for c, text in enumerate(row):
                if text:
                    ax.text(
                        pad + c * cell_w + (cell_w - pad) / 2,
                        pad + r * cell_h + cell_h - pad - caption_px / 2,
                        text,
                        ha="center",
                        va="center",
                        fontsize=7,
                    )
    if title:
        ax.set_title(title, fontsize=10, pad=18 if col_labels else 6)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    return path


def _with_caption_space(
    grid: np.ndarray, n_rows: int, cell_h: int, pad: int, caption_px: int
) -> np.ndarray:
    """Insert ``caption_px`` white rows under every row of images of ``grid``."""
    parts = [grid[:pad]]
    for r in range(n_rows):
        top = pad + r * cell_h
        parts.append(grid[top : top + cell_h - pad])
        parts.append(np.ones((caption_px, grid.shape[1], 3), dtype=grid.dtype))
        parts.append(grid[top + cell_h - pad : top + cell_h])
    return np.concatenate(parts, axis=0)


def save_tensors(path: str | Path, **arrays: torch.Tensor) -> Path:
    """Save tensors as a compressed ``.npz`` (float32 for float tensors); loads with numpy."""
    out = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().numpy()
        for k, v in arrays.items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)  # type: ignore[arg-type]  # numpy stub: **kwds vs allow_pickle
    return path


def save_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (floats rounded to 6 significant digits)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_round(obj), indent=1) + "\n")
    return path


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.6g}") if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_round(v) for v in obj]
    return obj
