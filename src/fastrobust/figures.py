"""The paper's Figures 3-5 as data: which images and nodes to show, for several models at once.

Goodwin et al. (HPEC 2020) compare standard, fast and 7-step models side by side: feature
visualisation (Figure 3), interpolation through representation space (Figure 4) and large
targeted perturbations (Figure 5). :mod:`fastrobust.represent` runs one optimisation; this
module makes the choices around it (live nodes, image pairs across classes, source images of
other classes, all from one seed) and returns a :class:`Figure`: the grid of images with its
labels and captions, the per-model results and one JSON-ready record per optimised image.
:meth:`Figure.save` writes ``grid.png``, ``images.npz`` and ``images.json``. The command line
(``fastrobust visualize``) only parses, calls and prints. See docs/architecture.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrobust.attacks.contract import attack_mode
from fastrobust.data.base import to_float
from fastrobust.data.subsets import stratified_subset
from fastrobust.errors import ConfigError, DataError
from fastrobust.figure_settings import (
    FeatureSettings,
    InterpolationSettings,
    TargetedSettings,
    ToolSettings,
    VisualizeCommand,
)
from fastrobust.model_info import data_dir_for, model_info
from fastrobust.represent import (
    Budget,
    LayerProbe,
    RepresentResult,
    check_images,
    interpolate_representations,
    node_values,
    targeted_perturbation,
    visualize_features,
)

log = logging.getLogger(__name__)

#: test images decoded from a disk dataset to choose sources from
DISK_POOL = 1000
#: every value scaled to the image size (:meth:`Budget.resolve`), L2, no progress bar
DEFAULT_BUDGET = Budget()
TITLES = {
    "features": "feature visualisation",
    "interpolate": "representation interpolation",
    "targeted": "large targeted perturbations",
}


@dataclass(frozen=True)
class Panel:
    """One model of a figure: its label, the module, and where it came from (for the records)."""

    label: str
    model: nn.Module
    source: str = ""


@dataclass
class Figure:
    """A grid of images (rows x columns) with its labels, results and per-image records."""

    tool: str
    """features, interpolate or targeted"""
    rows: list[list[torch.Tensor]]
    """the images of each row, ``C x H x W`` in ``[0,1]``"""
    row_labels: list[str]
    col_labels: list[str] | None
    captions: list[list[str]] | None
    """a short caption under each image (same layout as ``rows``)"""
    results: list[RepresentResult]
    """one per model, in panel order"""
    records: list[dict[str, Any]]
    """one JSON-ready dict per optimised image (model, numbers, where it started)"""
    summary: list[str]
    """one line per model"""
    labels: list[str] = field(default_factory=list)
    """the models' labels, in panel order"""
    sources: list[str] = field(default_factory=list)
    """where each model came from"""
    seed: int = 0

    def save(self, out_dir: str | Path, *, norm: str) -> dict[str, Path]:
        """Write ``grid.png``, ``images.npz`` (images, starts, model_index) and ``images.json``."""
        from fastrobust.imaging import save_grid, save_json, save_tensors

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        budget = self.results[0].budget
        paths = {"grid": out / "grid.png", "npz": out / "images.npz", "json": out / "images.json"}
        save_tensors(
            paths["npz"],
            images=torch.cat([r.images for r in self.results]),
            starts=torch.cat([r.starts for r in self.results]),
            model_index=torch.cat(
                [torch.full((r.images.shape[0],), i, dtype=torch.long) for i, r in enumerate(self.results)]
            ),
        )  # fmt: skip
        save_json(
            paths["json"],
            {
                "tool": self.tool,
                "seed": self.seed,
                "norm": norm,
                "eps": budget.eps,
                "steps": budget.steps,
                "step_size": budget.step_size,
                "layer": self.results[0].layer,
                "models": [
                    {"label": lab, "checkpoint": src, "summary": s}
                    for lab, src, s in zip(self.labels, self.sources, self.summary)
                ],
                "images": [{**rec, "index": i} for i, rec in enumerate(self.records)],
            },
        )
        title = f"{TITLES[self.tool]} ({norm} eps={budget.eps:.3g}, {budget.steps} steps)"
        save_grid(
            paths["grid"],
            self.rows,
            row_labels=self.row_labels,
            col_labels=self.col_labels,
            captions=self.captions,
            title=title,
        )
        return paths

    @property
    def num_images(self) -> int:
        return sum(r.images.shape[0] for r in self.results)


# ------------------------------------------------------------------------------------ inputs


def panel_labels(models: Sequence[nn.Module], sources: Sequence[str]) -> list[str]:
    """A label per model from its metadata (``"fast l2 eps=1"``), unique across the figure."""
    labels = [model_info(m).describe() or Path(s).stem for m, s in zip(models, sources)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({Path(s).name})" for lab, s in zip(labels, sources)]
    return labels


def check_same_shape(panels: Sequence[Panel]) -> None:
    """The models of one figure must take images of one shape (DataError otherwise)."""
    shapes = [model_info(p.model).image_shape for p in panels]
    if len(set(shapes)) > 1:
        raise DataError(
            "the models take images of different shapes: "
            + ", ".join(f"{p.source or p.label}: {s}" for p, s in zip(panels, shapes))
        )


def load_images_file(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (float, ``[0,1]``) and optional labels from a ``.npz`` or ``.pt`` file.

    ``.pt`` files are read with ``torch.load(weights_only=True)``: nothing in them can run code.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"images file {p} does not exist")
    x: torch.Tensor | None
    y: torch.Tensor | None
    try:
        if p.suffix == ".npz":
            import numpy as np

            with np.load(p) as z:
                key = "images" if "images" in z.files else z.files[0]
                x = torch.from_numpy(z[key])
                y = torch.from_numpy(z["labels"]) if "labels" in z.files else None
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
            x, y = (obj.get("images"), obj.get("labels")) if isinstance(obj, dict) else (obj, None)
    except Exception as exc:  # noqa: BLE001  any unreadable file is the user's to fix
        raise DataError(f"cannot read images from {p} ({type(exc).__name__})") from None
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{p} holds no image tensor (expected key 'images')")
    if x.dtype == torch.uint8:
        x = to_float(x)
    elif not x.is_floating_point():
        raise DataError(f"images in {p} must be float in [0,1] or uint8, got {x.dtype}")
    if y is not None and (y.dim() != 1 or y.shape[0] != x.shape[0]):
        raise DataError(f"labels in {p} must be one integer per image")
    return x.float(), (y.long() if y is not None else None)


def dataset_images(
    model: nn.Module,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images (float) and labels of ``dataset`` (default: the one ``model`` was trained on).

    A disk dataset is not decoded whole: a pool of :data:`DISK_POOL` of its test images is, a
    class-stratified sample drawn from ``seed``
    (:func:`~fastrobust.data.subsets.stratified_subset`), so every class can be a source.
    """
    from fastrobust.data import load_dataset
    from fastrobust.data.base import dataset_options

    info = model_info(model)
    name = dataset or info.dataset
    if not name:
        raise ConfigError(
            "the checkpoint records no dataset; set visualize.dataset or give an images file",
            field="visualize.dataset",
        )
    shape = info.image_shape
    size = shape[1] if shape is not None and "image_size" in dataset_options(name) else None
    data = load_dataset(name, data_dir_for(info, name, data_dir), image_size=size)
    if isinstance(data.test_x, torch.Tensor):
        return to_float(data.test_x), data.test_y
    n = len(data.test_y)
    pool = stratified_subset(data.test_y, DISK_POOL, seed)
    if n > DISK_POOL:
        log.info("decoding %d of %d test images to choose from", DISK_POOL, n)
    return to_float(data.test_x[pool]), data.test_y[pool]


# --------------------------------------------------------------------------------- choices


def live_nodes(
    model: nn.Module,
    seeds: torch.Tensor,
    count: int,
    *,
    layer: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``count`` random nodes of a representation layer that are active (> 0) at every seed.

    A node that is zero at the seed has no gradient through a ReLU, so its visualisation would
    not move; where fewer than ``count`` nodes are live, any nodes are drawn (with a warning).
    """
    probe = LayerProbe(model, layer)
    with attack_mode(probe, "eval"), torch.no_grad():
        values = node_values(probe(seeds))
    live = (values > 0).all(0).cpu()
    if int(live.sum()) >= count:
        pool = live.nonzero().squeeze(1)
    else:
        log.warning("fewer than %d nodes of %s are active at the seed", count, probe.description)
        pool = torch.arange(values.shape[1])
    return pool[torch.randperm(pool.numel(), generator=generator)[:count]]


def other_class_index(y: torch.Tensor, label: int, generator: torch.Generator | None = None) -> int:
    """A random index whose label differs from ``label``."""
    pool = (y.cpu() != label).nonzero().squeeze(1)
    if pool.numel() == 0:
        raise DataError(f"no test image of a class other than {label}")
    return int(pool[torch.randint(pool.numel(), (1,), generator=generator)][0])


# ---------------------------------------------------------------------------------- figures


def feature_figure(
    panels: Sequence[Panel],
    x: torch.Tensor,
    settings: FeatureSettings | None = None,
    *,
    budget: Budget = DEFAULT_BUDGET,
    seed: int = 0,
) -> Figure:
    """Figure 3: from ``num_seeds`` seeds (uniform noise or test images ``x``), maximise nodes.

    The nodes are ``settings.node`` or ``settings.nodes`` live nodes drawn per model
    (:func:`live_nodes`). One row per model and seed: the seed, then one image per node.
    """
    settings = settings or FeatureSettings()
    num_seeds, seed_image, layer = settings.num_seeds, settings.seed_image, settings.layer
    nodes: int | list[int] = settings.nodes if settings.node is None else settings.node
    g = torch.Generator().manual_seed(seed)
    if seed_image == "noise":
        seeds = torch.rand((num_seeds, *x.shape[1:]), generator=g).to(x.device)
        seed_desc = ["uniform noise"] * num_seeds
    else:
        idx = torch.randperm(x.shape[0], generator=g)[:num_seeds]
        seeds = x[idx.to(x.device)]
        seed_desc = [f"test image {int(i)}" for i in idx]
    fig = _empty("features", panels, seed)
    fig.captions = []
    for panel in panels:
        if isinstance(nodes, int):
            chosen = live_nodes(panel.model, seeds, nodes, layer=layer, generator=g)
        else:
            chosen = torch.tensor(list(nodes))
        k = chosen.numel()
        res = visualize_features(
            panel.model, seeds.repeat_interleave(k, 0), chosen.repeat(num_seeds), layer=layer,
            **budget.options(),
        )  # fmt: skip
        fig.results.append(res)
        for s in range(num_seeds):
            part = slice(s * k, (s + 1) * k)
            fig.rows.append([seeds[s], *res.images[part]])
            fig.captions.append(
                ["seed"]
                + [f"node {int(n)}: {float(a):.2f}" for n, a in zip(chosen, res.after[part])]
            )
            fig.row_labels.append(panel.label if num_seeds == 1 else f"{panel.label} / seed {s}")
        for i, rec in enumerate(res.records()):
            fig.records.append({**rec, **_origin(panel), "seed": seed_desc[i // k]})
        log.info("%s: layer %s", panel.label, res.layer)
        fig.summary.append(
            f"activation {float(res.before.mean()):.3f} -> {float(res.after.mean()):.3f} "
            f"(mean over {res.images.shape[0]} images)"
        )
    return fig


def interpolation_figure(
    panels: Sequence[Panel],
    x: torch.Tensor,
    y: torch.Tensor | None,
    settings: InterpolationSettings | None = None,
    *,
    consecutive_pairs: bool = False,
    budget: Budget = DEFAULT_BUDGET,
    seed: int = 0,
) -> Figure:
    """Figure 4: images between ``x1`` and ``x2`` in representation space, per model.

    Pairs are a random image and a random image of another class, or with
    ``consecutive_pairs`` images 0-1, 2-3, ... of ``x`` (a user's file). One row per model and
    pair: ``x1``, the interpolants from the largest ``lambda`` down, ``x2``.
    """
    settings = settings or InterpolationSettings()
    pairs, lambdas, start, layer = settings.pairs, settings.lambdas, settings.start, settings.layer
    g = torch.Generator().manual_seed(seed)
    if consecutive_pairs:
        if x.shape[0] < 2:
            raise DataError("the images file needs at least two images (pairs are 0-1, 2-3, ...)")
        n = min(pairs, x.shape[0] // 2)
        i1, i2 = torch.arange(0, 2 * n, 2), torch.arange(1, 2 * n, 2)
    else:
        y = _labels(y)
        i1 = torch.randperm(x.shape[0], generator=g)[:pairs]
        i2 = torch.tensor([other_class_index(y, int(y[i]), g) for i in i1])
    x1, x2 = x[i1.to(x.device)], x[i2.to(x.device)]
    lams = sorted(lambdas, reverse=True)
    fig = _empty("interpolate", panels, seed)
    fig.col_labels = ["x1", *[f"lam={lam:g}" for lam in lams], "x2"]
    for panel in panels:
        res = interpolate_representations(
            panel.model, x1, x2, lams, layer=layer, start=start,
            generator=torch.Generator().manual_seed(seed + 1), **budget.options(),
        )  # fmt: skip
        fig.results.append(res)
        for p in range(x1.shape[0]):
            fig.rows.append([x1[p], *res.images[p * len(lams) : (p + 1) * len(lams)], x2[p]])
            fig.row_labels.append(panel.label if x1.shape[0] == 1 else f"{panel.label} / pair {p}")
        for rec in res.records():
            p = rec["pair"]
            extra = {"x1": int(i1[p]), "x2": int(i2[p]), "start": start}
            fig.records.append({**rec, **_origin(panel), **extra})
        rel = res.extra
        fig.summary.append(
            f"representation distance {float(res.before.mean()):.3f} -> "
            f"{float(res.after.mean()):.3f} (relative to ||f(x1)-f(x2)||: "
            f"{float(rel['relative_distance_before'].mean()):.3f} -> "
            f"{float(rel['relative_distance_after'].mean()):.3f})"
        )
    return fig


def targeted_figure(
    panels: Sequence[Panel],
    x: torch.Tensor,
    y: torch.Tensor | None,
    settings: TargetedSettings | None = None,
    *,
    in_order: bool = False,
    budget: Budget = DEFAULT_BUDGET,
    seed: int = 0,
) -> Figure:
    """Figure 5: large targeted perturbations of test images toward each target class.

    Sources are random images of another class (``per_target`` per target), or with
    ``in_order`` every image of ``x`` in turn (targets cycled). The first row holds the sources,
    then one row per model.
    """
    settings = settings or TargetedSettings()
    per_target = settings.per_target
    k = min(model_info(p.model).num_classes or 0 for p in panels)
    targets = list(range(k)) if settings.targets is None else list(settings.targets)
    for t in targets:
        if not 0 <= t < k:
            raise ConfigError(
                f"target class {t} is out of range; the models have {k} classes (0 to {k - 1})"
            )
    g = torch.Generator().manual_seed(seed)
    if in_order:
        idx = torch.arange(x.shape[0])
        tgt = torch.tensor([targets[i % len(targets)] for i in range(x.shape[0])])
    else:
        tgt = torch.tensor(targets).repeat_interleave(per_target)
        idx = torch.tensor([other_class_index(_labels(y), int(t), g) for t in tgt])
    src = x[idx.to(x.device)]
    classes = model_info(panels[0].model).classes or [str(i) for i in range(k)]
    fig = _empty("targeted", panels, seed)
    fig.col_labels = [
        f"{classes[int(y[i])]}->{classes[int(t)]}" if y is not None else f"->{classes[int(t)]}"
        for i, t in zip(idx, tgt)
    ]
    fig.rows.append([*src])
    fig.row_labels.append("original")
    fig.captions = [[""] * len(fig.col_labels)]
    for panel in panels:
        res = targeted_perturbation(panel.model, src, tgt.to(x.device), **budget.options())
        fig.results.append(res)
        fig.rows.append([*res.images])
        fig.row_labels.append(panel.label)
        fig.captions.append([f"p={float(p):.2f}" for p in res.after])
        for i, rec in enumerate(res.records()):
            source_label = int(y[idx[i]]) if y is not None else None
            extra = {"source_index": int(idx[i]), "source_label": source_label}
            fig.records.append({**rec, **_origin(panel), **extra})
        hit = int((res.extra["pred"] == res.extra["target"]).sum())
        fig.summary.append(
            f"target probability {float(res.before.mean()):.3f} -> {float(res.after.mean()):.3f}, "
            f"reached {hit}/{res.images.shape[0]}, mean {budget.norm} norm "
            f"{float(res.perturbation_norm.mean()):.3f} (eps {res.budget.eps:g})"
        )
    return fig


def source_images(
    panels: Sequence[Panel],
    *,
    images_file: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images a figure starts from: a file of images, or test images; checked to fit."""
    check_same_shape(panels)
    if images_file:
        x, y = load_images_file(images_file)
    else:
        x, y = dataset_images(panels[0].model, dataset=dataset, data_dir=data_dir, seed=seed)
    if x.shape[0] == 0:
        raise DataError("no images to start from")
    x = check_images(panels[0].model, x.to(device))
    return x, (y.to(device) if y is not None else None)


def _labels(y: torch.Tensor | None) -> torch.Tensor:
    if y is None:
        raise DataError("images of other classes can only be chosen with labels")
    return y


def _empty(tool: str, panels: Sequence[Panel], seed: int) -> Figure:
    return Figure(
        tool=tool, rows=[], row_labels=[], col_labels=None, captions=None, results=[], records=[],
        summary=[], labels=[p.label for p in panels], sources=[p.source for p in panels], seed=seed,
    )  # fmt: skip


def _origin(panel: Panel) -> dict[str, Any]:
    return {"model": panel.label, "checkpoint": panel.source}


def draw_figure(
    tool: str,
    panels: Sequence[Panel],
    x: torch.Tensor,
    y: torch.Tensor | None,
    settings: ToolSettings,
    *,
    budget: Budget = DEFAULT_BUDGET,
    seed: int = 0,
    from_file: bool = False,
) -> Figure:
    """The figure of ``tool`` (features, interpolate, targeted) with its ``settings``;
    ``from_file``: ``x`` is a user's images file, taken in order (pairs 0-1, 2-3, ...;
    every image a source) instead of drawn at random."""
    if isinstance(settings, FeatureSettings) and tool == "features":
        return feature_figure(panels, x, settings, budget=budget, seed=seed)
    if isinstance(settings, InterpolationSettings) and tool == "interpolate":
        return interpolation_figure(
            panels, x, y, settings, consecutive_pairs=from_file, budget=budget, seed=seed
        )
    if isinstance(settings, TargetedSettings) and tool == "targeted":
        return targeted_figure(panels, x, y, settings, in_order=from_file, budget=budget, seed=seed)
    raise ConfigError(f"no figure {tool!r} with {type(settings).__name__}")


def _out_dir(command: VisualizeCommand, tool: str) -> Path:
    """The output folder, checked (not created) before any work."""
    from datetime import datetime

    from fastrobust.outputs import check_output_dir

    if command.out:
        return check_output_dir(command.out, field="visualize.out", own=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return check_output_dir(Path("runs") / f"visualize-{tool}-{stamp}")


def visualize(
    tool: str,
    sources: Sequence[str | Path],
    settings: ToolSettings,
    command: VisualizeCommand | None = None,
    budget: Budget = DEFAULT_BUDGET,
    *,
    import_factory: bool = False,
) -> tuple[Figure, dict[str, Path]]:
    """``fastrobust visualize``: load the models in ``sources`` (run folders or checkpoints),
    draw ``tool``'s figure of all of them side by side and save it (:meth:`Figure.save`).
    Returns the figure and the files written. ``import_factory``: build a
    ``package.module:factory`` model a checkpoint names (only for checkpoints you trust)."""
    from fastrobust.checkpoint import load_model
    from fastrobust.distributed import resolve_device
    from fastrobust.outputs import writing

    command = command or VisualizeCommand()
    device = resolve_device(command.device)
    out = _out_dir(command, tool)  # before any work: a bad folder costs nothing
    models = [
        load_model(p, device=device, arch=command.arch, dataset=command.dataset,
                   import_factory=import_factory, weights=command.weights)
        for p in sources
    ]  # fmt: skip
    if command.labels and len(command.labels) != len(models):
        raise ConfigError(
            f"got {len(command.labels)} visualize.labels for {len(models)} models",
            field="visualize.labels",
        )
    names = [str(p) for p in sources]
    labels = command.labels or panel_labels(models, names)
    panels = [Panel(lab, m, src) for lab, m, src in zip(labels, models, names)]
    x, y = source_images(
        panels, images_file=command.images, dataset=command.dataset, data_dir=command.data_dir,
        seed=command.seed, device=device,
    )  # fmt: skip
    fig = draw_figure(
        tool, panels, x, y, settings, budget=budget, seed=command.seed,
        from_file=bool(command.images),
    )  # fmt: skip
    with writing("the visualisation", out):
        written = fig.save(out, norm=budget.norm)
    return fig, written
