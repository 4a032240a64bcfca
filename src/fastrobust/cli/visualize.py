"""``fastrobust visualize {features,interpolate,targeted} RUN [RUN ...]``: the paper's Figures 3-5.

Each model gets its own block of rows in one PNG grid, so standard, fast and 7-step models sit
side by side. The folder also holds ``images.npz`` (``images``: every optimised image,
N x C x H x W in ``[0,1]``; ``starts``: where each started; ``model_index``) and
``images.json`` (what each image is, with its numbers: activation, representation distance,
target probability before and after, perturbation norm). ``--seed`` fixes every random choice.
"""

from __future__ import annotations

import argparse
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrobust.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TOOLS = ("features", "interpolate", "targeted")
DISK_POOL = 1000  # test images decoded from a disk dataset to choose sources from


# ------------------------------------------------------------------------------------ parser


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "visualize",
        help="feature visualisation, representation interpolation, large targeted perturbations",
        description="Look inside trained models (Goodwin et al. 2020, Figures 3-5; Engstrom et "
        "al. 2019): every tool is PGD over the input with a large eps and a custom loss.",
    )
    tools = p.add_subparsers(dest="tool", metavar="TOOL", required=True, parser_class=type(p))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "models", nargs="+", metavar="RUN_OR_CHECKPOINT", help="run folders or .pt checkpoints"
    )
    common.add_argument("--out", help="output folder (default: runs/visualize-TOOL-TIMESTAMP)")
    common.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    common.add_argument("--norm", default="l2", help="threat model norm: l2 or linf")
    common.add_argument("--eps", type=float, help="radius (default: scaled to the image size)")
    common.add_argument("--steps", type=int, help="PGD steps (default: scaled to image size)")
    common.add_argument("--step-size", type=float, help="step length (default 2.5*eps/steps)")
    common.add_argument(
        "--images",
        help=".npz or .pt file of N x C x H x W images in [0,1] (or uint8), optional 'labels', "
        "used instead of test images",
    )
    common.add_argument("--dataset", help="test images from this dataset (default: the model's)")
    common.add_argument("--data-dir", help="folder of the dataset files")
    common.add_argument("--labels", nargs="+", help="one row label per model")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")

    feat = tools.add_parser(
        "features",
        parents=[common],
        help="maximise single nodes of a representation layer (Figure 3)",
        description="Direct feature visualisation: from a seed, ascend one node's activation.",
    )
    feat.add_argument("--layer", help="module name (default: input of the final nn.Linear)")
    feat.add_argument(
        "--nodes", type=int, default=8, help="number of nodes drawn at random (default 8)"
    )
    feat.add_argument("--node", type=int, nargs="+", help="these node indices instead")
    feat.add_argument(
        "--seed-image",
        choices=("noise", "test"),
        default="noise",
        help="start from uniform noise (default) or test images",
    )
    feat.add_argument("--num-seeds", type=int, default=1, help="seed images (default 1)")

    interp = tools.add_parser(
        "interpolate",
        parents=[common],
        help="images between two images in representation space (Figure 4, Eq. 14)",
        description="Find x whose representation is closest to lam*f(x1) + (1-lam)*f(x2).",
    )
    interp.add_argument("--layer", help="module name (default: input of the final nn.Linear)")
    interp.add_argument(
        "--lambdas", type=float, nargs="+", default=[0.25, 0.5, 0.75], help="default 0.25 0.5 0.75"
    )
    interp.add_argument("--pairs", type=int, default=3, help="image pairs (default 3)")
    interp.add_argument(
        "--start",
        choices=("noise", "blend", "x1", "x2"),
        default="noise",
        help="where each optimisation starts (default: uniform noise)",
    )

    targ = tools.add_parser(
        "targeted",
        parents=[common],
        help="large targeted perturbations toward each class (Figure 5)",
        description="Targeted PGD with a large eps from test images of other classes.",
    )
    targ.add_argument("--targets", type=int, nargs="+", help="target classes (default: all)")
    targ.add_argument(
        "--per-target", type=int, default=1, help="source images per target (default 1)"
    )
    for sub in (feat, interp, targ):
        sub.set_defaults(func=run)


# ------------------------------------------------------------------------------------ inputs


def _load_models(args: argparse.Namespace, device: torch.device) -> list[nn.Module]:
    from fastrobust.checkpoint import load_model

    models = [load_model(path, device=device) for path in args.models]
    shapes = {_image_shape(m) for m in models}
    if len(shapes) > 1:
        raise DataError(
            "the models take images of different shapes: "
            + ", ".join(f"{p}: {s}" for p, s in zip(args.models, map(_image_shape, models)))
        )
    if args.labels and len(args.labels) != len(models):
        raise ConfigError(f"got {len(args.labels)} --labels for {len(models)} models")
    return models


def _image_shape(model: nn.Module) -> tuple[int, int, int] | None:
    from fastrobust.model_info import model_info

    return model_info(model).image_shape


def _model_labels(args: argparse.Namespace, models: list[nn.Module]) -> list[str]:
    if args.labels:
        return list(args.labels)
    from fastrobust.model_info import model_info

    labels = [model_info(m).describe() or Path(p).stem for p, m in zip(args.models, models)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({Path(p).name})" for lab, p in zip(labels, args.models)]
    return labels


def _load_images_file(path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (float, [0,1]) and optional labels from a .npz or .pt file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"images file {p} does not exist")
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
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise DataError(f"images in {p} must be float in [0,1] or uint8, got {x.dtype}")
    if y is not None and (y.dim() != 1 or y.shape[0] != x.shape[0]):
        raise DataError(f"labels in {p} must be one integer per image")
    return x.float(), (y.long() if y is not None else None)


def _sources(
    args: argparse.Namespace, model: nn.Module, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images to start from: the --images file, or the test split of the dataset."""
    from fastrobust.represent import check_images

    if args.images:
        x, y = _load_images_file(args.images)
    else:
        from fastrobust.data import load_dataset
        from fastrobust.data.base import dataset_options, to_float
        from fastrobust.model_info import model_info

        info = model_info(model)
        name = args.dataset or info.dataset
        if not name:
            raise ConfigError("the checkpoint records no dataset; pass --dataset or --images")
        shape = info.image_shape
        size = shape[1] if shape is not None and "image_size" in dataset_options(name) else None
        data = load_dataset(name, args.data_dir, image_size=size)
        if isinstance(data.test_x, torch.Tensor):
            x, y = to_float(data.test_x), data.test_y
        else:  # a disk dataset: decode a seeded pool of test images, not the whole split
            n = len(data.test_y)
            g = torch.Generator().manual_seed(args.seed)
            pool = torch.randperm(n, generator=g)[:DISK_POOL].sort().values
            if n > DISK_POOL:
                log.info("decoding %d of %d test images to choose from", DISK_POOL, n)
            x, y = to_float(data.test_x[pool]), data.test_y[pool]
    if x.shape[0] == 0:
        raise DataError("no images to start from")
    return check_images(model, x.to(device)), (y.to(device) if y is not None else None)


def _out_dir(args: argparse.Namespace) -> Path:
    if args.out:
        out = Path(args.out).expanduser()
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"visualize-{args.tool}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------------- tools


def _budget_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"norm": args.norm, "eps": args.eps, "steps": args.steps, "step_size": args.step_size}


def _features(args, models, labels, x, y, g):  # noqa: ANN001, ANN202
    from fastrobust.attacks.contract import attack_mode
    from fastrobust.represent import LayerProbe, count_nodes, node_values, visualize_features

    if args.num_seeds < 1 or (args.node is None and args.nodes < 1):
        raise ConfigError("need --num-seeds >= 1 and --nodes >= 1")
    if args.seed_image == "noise":
        seeds = torch.rand((args.num_seeds, *x.shape[1:]), generator=g).to(x.device)
        seed_desc = ["uniform noise"] * args.num_seeds
    else:
        idx = torch.randperm(x.shape[0], generator=g)[: args.num_seeds]
        seeds = x[idx.to(x.device)]
        seed_desc = [f"test image {int(i)}" for i in idx]
    results, rows, captions, row_labels, records = [], [], [], [], []
    for m, (model, label) in enumerate(zip(models, labels)):
        if args.node is not None:
            nodes = torch.tensor(args.node)
        else:
            width = count_nodes(model, x.shape[1:], args.layer, device=x.device)
            probe = LayerProbe(model, args.layer)
            with attack_mode(probe, "eval"), torch.no_grad():
                live = (node_values(probe(seeds)) > 0).all(0).cpu()
            pool = live.nonzero().squeeze(1) if int(live.sum()) >= args.nodes else None
            if pool is None:
                log.warning("%s: fewer than %d nodes are active at the seed", label, args.nodes)
                pool = torch.arange(width)
            nodes = pool[torch.randperm(pool.numel(), generator=g)[: args.nodes]]
        k = nodes.numel()
        res = visualize_features(
            model,
            seeds.repeat_interleave(k, 0),
            nodes.repeat(args.num_seeds),
            layer=args.layer,
            **_budget_kwargs(args),
        )
        results.append(res)
        for s in range(args.num_seeds):
            sl = slice(s * k, (s + 1) * k)
            rows.append([seeds[s], *res.images[sl]])
            captions.append(
                ["seed"] + [f"node {int(n)}: {float(a):.2f}" for n, a in zip(nodes, res.after[sl])]
            )
            row_labels.append(label if args.num_seeds == 1 else f"{label} / seed {s}")
        for i, rec in enumerate(res.records()):
            rec.update(model=label, checkpoint=args.models[m], seed=seed_desc[i // k])
            records.append(rec)
        log.info("%s: layer %s", label, res.layer)
    summary = [
        f"activation {float(r.before.mean()):.3f} -> {float(r.after.mean()):.3f} "
        f"(mean over {r.images.shape[0]} images)"
        for r in results
    ]
    return results, rows, row_labels, None, captions, records, summary


def _interpolate(args, models, labels, x, y, g):  # noqa: ANN001, ANN202
    from fastrobust.represent import interpolate_representations

    if args.pairs < 1:
        raise ConfigError("need --pairs >= 1")
    if args.images:
        if x.shape[0] < 2:
            raise DataError("--images needs at least two images (pairs are 0-1, 2-3, ...)")
        n = min(args.pairs, x.shape[0] // 2)
        i1, i2 = torch.arange(0, 2 * n, 2), torch.arange(1, 2 * n, 2)
    else:
        i1 = torch.randperm(x.shape[0], generator=g)[: args.pairs]
        i2 = torch.stack([_other_class(y, int(y[i]), g) for i in i1])
    x1, x2 = x[i1.to(x.device)], x[i2.to(x.device)]
    lambdas = sorted(args.lambdas, reverse=True)
    results, rows, row_labels, records, summary = [], [], [], [], []
    for m, (model, label) in enumerate(zip(models, labels)):
        res = interpolate_representations(
            model,
            x1,
            x2,
            lambdas,
            layer=args.layer,
            start=args.start,
            generator=torch.Generator().manual_seed(args.seed + 1),
            **_budget_kwargs(args),
        )
        results.append(res)
        n_lam = len(lambdas)
        for p in range(x1.shape[0]):
            rows.append([x1[p], *res.images[p * n_lam : (p + 1) * n_lam], x2[p]])
            row_labels.append(label if x1.shape[0] == 1 else f"{label} / pair {p}")
        for rec in res.records():
            p = rec["pair"]
            rec.update(
                model=label,
                checkpoint=args.models[m],
                x1=int(i1[p]),
                x2=int(i2[p]),
                start=args.start,
            )
            records.append(rec)
        rel = res.extra
        summary.append(
            f"representation distance {float(res.before.mean()):.3f} -> "
            f"{float(res.after.mean()):.3f} (relative to ||f(x1)-f(x2)||: "
            f"{float(rel['relative_distance_before'].mean()):.3f} -> "
            f"{float(rel['relative_distance_after'].mean()):.3f})"
        )
    cols = ["x1", *[f"lam={lam:g}" for lam in lambdas], "x2"]
    return results, rows, row_labels, cols, None, records, summary


def _other_class(y: torch.Tensor | None, label: int, g: torch.Generator) -> torch.Tensor:
    """A random index whose label differs from ``label`` (any index without labels)."""
    pool = torch.arange(y.shape[0]) if y is None else (y.cpu() != label).nonzero().squeeze(1)
    if pool.numel() == 0:
        raise DataError(f"no test image of a class other than {label}")
    return pool[torch.randint(pool.numel(), (1,), generator=g)][0]


def _targeted(args, models, labels, x, y, g):  # noqa: ANN001, ANN202
    from fastrobust.model_info import model_info
    from fastrobust.represent import targeted_perturbation

    k = min(model_info(m).num_classes or 0 for m in models)
    targets = list(range(k)) if args.targets is None else list(args.targets)
    for t in targets:
        if not 0 <= t < k:
            raise ConfigError(
                f"target class {t} is out of range; the models have {k} classes (0 to {k - 1})"
            )
    if args.per_target < 1:
        raise ConfigError("need --per-target >= 1")
    if args.images:
        idx = torch.arange(x.shape[0])
        tgt = torch.tensor([targets[i % len(targets)] for i in range(x.shape[0])])
    else:
        tgt = torch.tensor(targets).repeat_interleave(args.per_target)
        idx = torch.stack([_other_class(y, int(t), g) for t in tgt])
    src = x[idx.to(x.device)]
    classes = model_info(models[0]).classes or [str(i) for i in range(k)]
    cols = [
        f"{classes[int(y[i])]}->{classes[int(t)]}" if y is not None else f"->{classes[int(t)]}"
        for i, t in zip(idx, tgt)
    ]
    results, rows, row_labels, captions, records, summary = [], [[*src]], ["original"], [], [], []
    captions.append([""] * len(cols))
    for m, (model, label) in enumerate(zip(models, labels)):
        res = targeted_perturbation(model, src, tgt.to(x.device), **_budget_kwargs(args))
        results.append(res)
        rows.append([*res.images])
        row_labels.append(label)
        captions.append([f"p={float(p):.2f}" for p in res.after])
        for i, rec in enumerate(res.records()):
            rec.update(
                model=label,
                checkpoint=args.models[m],
                source_index=int(idx[i]),
                source_label=int(y[idx[i]]) if y is not None else None,
            )
            records.append(rec)
        hit = int((res.extra["pred"] == res.extra["target"]).sum())
        summary.append(
            f"target probability {float(res.before.mean()):.3f} -> {float(res.after.mean()):.3f}, "
            f"reached {hit}/{res.images.shape[0]}, mean {args.norm} norm "
            f"{float(res.perturbation_norm.mean()):.3f} (eps {res.budget.eps:g})"
        )
    return results, rows, row_labels, cols, captions, records, summary


# --------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from fastrobust.distributed import resolve_device
    from fastrobust.imaging import save_grid, save_json, save_tensors

    device = resolve_device(args.device)
    models = _load_models(args, device)
    labels = _model_labels(args, models)
    x, y = _sources(args, models[0], device)
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    tool = {"features": _features, "interpolate": _interpolate, "targeted": _targeted}[args.tool]
    results, rows, row_labels, cols, captions, records, summary = tool(
        args, models, labels, x, y, g
    )
    out = _out_dir(args)
    images = torch.cat([r.images for r in results])
    save_tensors(
        out / "images.npz",
        images=images,
        starts=torch.cat([r.starts for r in results]),
        model_index=torch.cat(
            [torch.full((r.images.shape[0],), i, dtype=torch.long) for i, r in enumerate(results)]
        ),
    )
    budget = results[0].budget
    for i, rec in enumerate(records):
        rec["index"] = i
    save_json(
        out / "images.json",
        {
            "tool": args.tool,
            "seed": args.seed,
            "norm": args.norm,
            "eps": budget.eps,
            "steps": budget.steps,
            "step_size": budget.step_size,
            "layer": results[0].layer,
            "models": [
                {"label": lab, "checkpoint": str(p), "summary": s}
                for lab, p, s in zip(labels, args.models, summary)
            ],
            "images": records,
        },
    )
    title = {
        "features": "feature visualisation",
        "interpolate": "representation interpolation",
        "targeted": "large targeted perturbations",
    }[args.tool]
    save_grid(
        out / "grid.png",
        rows,
        row_labels=row_labels,
        col_labels=cols,
        captions=captions,
        title=f"{title} ({args.norm} eps={budget.eps:.3g}, {budget.steps} steps)",
    )
    for label, line in zip(labels, summary):
        print(f"{label}: {line}")
    print(
        f"wrote {out / 'grid.png'}, {out / 'images.npz'} ({images.shape[0]} images), "
        f"{out / 'images.json'}"
    )
    return 0
