"""``fastrobust timing``: where the training time goes (Goodwin et al. 2020, Table I, Figure 1).

Without ``--runs`` it measures attack and training-step costs over batch sizes on this device
and estimates lower bounds on total training time over batch sizes and GPU counts. With
``--runs`` it prints Table I from run folders (add ``--measure`` to also measure, with the
first run's settings as defaults, and overlay the runs' measured times as stars).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fastrobust.errors import ConfigError


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "timing",
        help="attack cost vs batch size, training-time lower bounds, Table I from run folders",
        description="Measure one forward pass, one training step and one K-step PGD attack "
        "over batch sizes on this device (Figure 1 left), estimate lower bounds on total "
        "training time over batch sizes and GPU counts (Figure 1 middle/right), and print "
        "Table I (hours to last/best epoch) from run folders. Writes CSV files and timing.png.",
    )
    p.add_argument("--runs", nargs="+", default=[], metavar="RUN", help="run folders for Table I")
    p.add_argument(
        "--baseline",
        default="0",
        help="Table I baseline: a run's position in --runs (0-based), folder name or path "
        "(default: the first)",
    )
    p.add_argument(
        "--measure",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure on this device (default: yes without --runs, no with --runs)",
    )
    g = p.add_argument_group("measurement (defaults: the first run's settings, else these)")
    g.add_argument("--model", help="registry model name (default: small_cnn)")
    g.add_argument("--dataset", help="dataset whose image shape and size to use (default: digits)")
    g.add_argument("--data-dir", help="dataset folder, only for datasets timing does not know")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    g.add_argument(
        "--batch-sizes",
        type=_ints,
        default=[32, 64, 128, 256, 512],
        help="batch sizes to measure (default: 32,64,128,256,512)",
    )
    g.add_argument(
        "--steps", type=_ints, default=[1, 7], help="PGD steps to measure (default: 1,7)"
    )
    g.add_argument("--repeats", type=int, default=5, help="timed calls per point (default: 5)")
    g.add_argument("--warmup", type=int, default=2, help="untimed calls first (default: 2)")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], help="autocast (default: none)")
    g.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None, help="NHWC"
    )
    g.add_argument("--norm", choices=["l2", "linf"], help="threat model (default: l2)")
    g.add_argument("--eps", type=float, help="perturbation radius (default: 1.0)")
    e = p.add_argument_group("estimate (defaults: the first run's settings, else these)")
    e.add_argument("--epochs", type=int, help="training epochs (default: 30)")
    e.add_argument("--eval-every", type=int, help="validate every N epochs (default: 1)")
    e.add_argument("--eval-steps", type=int, help="validation PGD steps (default: 10)")
    e.add_argument("--train-size", type=int, help="training images (default: the dataset's)")
    e.add_argument("--val-size", type=int, help="validated test images (default: the dataset's)")
    e.add_argument("--global-batch", type=int, help="global batch of the GPU sweep (default: 512)")
    e.add_argument(
        "--gpus",
        type=_ints,
        default=[1, 2, 4, 8],
        help="GPU counts of the GPU sweep (default: 1,2,4,8)",
    )
    e.add_argument(
        "--procs",
        type=int,
        help="GPUs assumed in the batch-size sweep (default: the first run's, else 1)",
    )
    p.add_argument("--out", default="timing", help="output folder (default: ./timing)")
    p.add_argument(
        "--import-model-factory",
        action="store_true",
        help="import and run a package.module:factory model named by a run folder's config "
        "(only for run folders you trust)",
    )
    p.set_defaults(func=run)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in text]
    return "\n".join(lines)


def _baseline_index(spec: str, runs: list[Any]) -> int:
    if spec.isdigit():
        return int(spec)
    for i, r in enumerate(runs):
        if spec in (r.name, r.path) or Path(spec).expanduser().resolve() == Path(r.path).resolve():
            return i
    raise ConfigError(f"--baseline {spec!r} is none of the --runs")


def _print_table_one(runs: list[Any], baseline: int, out: Path) -> None:
    from fastrobust.outputs import writing
    from fastrobust.timing.runs_table import table_one, write_rows_csv

    rows = table_one(runs, baseline)
    with writing("table1.csv", out):
        write_rows_csv(rows, out / "table1.csv")
    print(f"Table I: training time (relative to {runs[baseline].name})")
    headers = ["run", "method", "GPUs", "batch", "epochs", "best ep", "best acc", "best by"]
    headers += ["h to last", "h to best", "rel last", "rel best", "test adv", "best test adv"]
    keys = ["run", "method", "gpus", "batch_size", "epochs", "best_epoch", "best_acc", "best_by"]
    keys += ["hours_to_last", "hours_to_best", "rel_last", "rel_best"]
    keys += ["test_adv_acc", "best_test_adv_acc"]
    print(_table(headers, [[row[k] for k in keys] for row in rows]))


def _intervals(
    recorded: dict[str, Any], eval_every: Any, n_train: int, n_test: int
) -> tuple[int, int]:
    """Validation and check intervals of the first run's config (``auto`` resolved as the
    trainer resolves it), with ``eval_every`` as given; every epoch without a run."""
    from fastrobust.training.config import SECTION_OF, TrainConfig
    from fastrobust.training.validation import between_epoch_intervals

    if not recorded:
        return int(eval_every), 1
    settings = {k: v for k, v in recorded.items() if k in SECTION_OF}
    cfg = TrainConfig(**{**settings, "eval_every": eval_every})
    resolved = between_epoch_intervals(cfg, n_train=n_train, n_test=n_test)
    return resolved.eval_every, resolved.overfit_check_every


def _pivot(estimates: list[Any], key: str, methods: list[str]) -> list[list[Any]]:
    by = {(getattr(e, key), e.method): e.total_s / 3600 for e in estimates}
    xs = sorted({getattr(e, key) for e in estimates})
    return [[x, *(by.get((x, m)) for m in methods)] for x in xs]


def run(args: argparse.Namespace) -> int:
    import torch

    from fastrobust.attacks.threat import threat_model
    from fastrobust.distributed import resolve_device
    from fastrobust.models import ModelSpec, build_model
    from fastrobust.outputs import check_output_dir, writing
    from fastrobust.timing import measure
    from fastrobust.timing.plot import plot_figure_one
    from fastrobust.timing.runs_table import read_run
    from fastrobust.training.config import EvaluationConfig

    out = check_output_dir(args.out, what="--out")  # before any work
    runs = [read_run(p) for p in args.runs]
    with writing("the output folder", out):
        out.mkdir(parents=True, exist_ok=True)
    if runs:
        _print_table_one(runs, _baseline_index(args.baseline, runs), out)
    do_measure = args.measure if args.measure is not None else not runs
    if not do_measure:
        print(f"written: {out / 'table1.csv'}")
        return 0
    first = runs[0].config if runs else {}

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return value if value is not None else first.get(name, default)

    dataset, model_name = pick("dataset", "digits"), pick("model", "small_cnn")
    shape, classes, n_train, n_test = _dataset_facts(dataset, pick("data_dir", None))
    defaults = EvaluationConfig()
    eval_limit = first.get("eval_limit", defaults.eval_limit)
    val_default = min(eval_limit, n_test) if eval_limit else n_test
    eval_every, check_every = _intervals(first, pick("eval_every", 1), n_train, n_test)
    schedule = measure.Schedule(
        train_size=args.train_size or n_train,
        val_size=args.val_size if args.val_size is not None else val_default,
        epochs=pick("epochs", 30),
        eval_every=eval_every,
        eval_steps=pick("eval_steps", 10),
        check_size=min(first.get("overfit_check_size", defaults.overfit_check_size), n_train),
        check_every=check_every,
    )
    for name in ("repeats", "procs", "global_batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    device = resolve_device(args.device)
    torch.manual_seed(0)
    spec = ModelSpec(model_name, classes, shape[0], shape[-1])
    # a factory named by --model is the user's own choice; one named by a run folder is not
    net = build_model(spec, import_factory=args.model is not None or args.import_model_factory)
    threat = threat_model(pick("norm", "l2"), pick("eps", 1.0))
    curves = measure.measure_curves(
        net,
        image_shape=shape,
        num_classes=classes,
        batch_sizes=args.batch_sizes,
        threat=threat,
        steps=args.steps,
        device=device,
        repeats=args.repeats,
        warmup=args.warmup,
        amp=pick("amp", "none"),
        channels_last=bool(pick("channels_last", False)),
        name=model_name,
    )
    with writing("measured.csv", out):
        curves.to_csv(out / "measured.csv")
    methods = [0, *sorted(set(args.steps))]
    labels = [measure.method_label(k) for k in methods]
    procs = args.procs or (runs[0].world_size if runs else 1)
    by_batch = measure.sweep_batch_sizes(
        curves,
        schedule,
        methods=methods,
        batch_sizes=curves.batch_sizes(measure.FORWARD),
        gpus=procs,
    )
    global_batch = args.global_batch or pick("batch_size", 512)
    by_gpus = measure.sweep_gpus(
        curves, schedule, methods=methods, global_batch=global_batch, gpus=args.gpus
    )
    with writing("the timing estimates", out):
        measure.write_estimates_csv(by_batch, out / "estimate_batch.csv")
        measure.write_estimates_csv(by_gpus, out / "estimate_gpus.csv")
    title = (
        f"{model_name} on {dataset}-shaped inputs {tuple(shape)}, {curves.device}; "
        f"{schedule.train_size} train images, {schedule.epochs} epochs, validation of "
        f"{schedule.val_size} images every {schedule.eval_every} epoch(s)"
    )
    with writing("timing.png", out):
        plot_figure_one(out / "timing.png", curves, by_batch, by_gpus, runs, title=title)

    print(f"\nseconds per call on {curves.device} (median of {args.repeats}):")
    ops = curves.ops()
    sizes = curves.batch_sizes(measure.FORWARD)
    print(_table(["batch", *ops], [[b, *(curves.seconds(op, b) for op in ops)] for b in sizes]))
    print(f"\nlower bound on total training hours, {procs} GPU(s) [{title}]:")
    print(_table(["global batch", *labels], _pivot(by_batch, "global_batch", labels)))
    print(f"\nlower bound on total training hours, global batch {global_batch}:")
    print(_table(["GPUs", *labels], _pivot(by_gpus, "gpus", labels)))
    skipped = [g for g in args.gpus if global_batch % g]
    if skipped:
        print(f"(GPU counts {skipped} do not divide the global batch {global_batch}: left out)")
    print(f"\nwritten: {out}/measured.csv, estimate_batch.csv, estimate_gpus.csv, timing.png")
    return 0


def _dataset_facts(name: str, data_dir: str | None) -> tuple[tuple[int, int, int], int, int, int]:
    """Image shape, classes, training and test set sizes (loading the data only when the
    dataset is not one timing knows)."""
    from fastrobust.timing import measure

    if name in measure.DATASET_FACTS:
        return measure.DATASET_FACTS[name]
    from fastrobust.data import load_dataset

    data = load_dataset(name, data_dir)
    return data.image_shape, data.num_classes, len(data.train_y), len(data.test_y)
