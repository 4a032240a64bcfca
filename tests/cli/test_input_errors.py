"""User mistakes, one table: every case exits 2 with ONE line naming the problem, no traceback,
and writes nothing (no run folder, no output folder, the input run untouched).

The table holds the cases the hardening review found broken (config and data validation,
zero attack budgets) and a representative set of those that already behaved, so none
regresses. Everything runs in-process through ``fastrobust.cli.main`` (fast: the data is
digits or a few tiny files, and every case stops before training or attacking).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_files import write_cifar10
from conftest import tiny_config
from fastrobust.checkpoint import load_checkpoint, save_checkpoint
from fastrobust.cli import build_parser, main
from fastrobust.training.trainer import fit


def _image(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def _image_folder(root: Path) -> Path:
    """A valid two-class image folder (4 train, 2 val images per class)."""
    for split, n in (("train", 4), ("val", 2)):
        for c, cls in enumerate(("cat", "dog")):
            for i in range(n):
                _image(root / split / cls / f"{i}.png", 40 * c + 10 * i)
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Inputs the cases refer to as ``{name}``: configs, data folders, a run, checkpoints."""
    root = tmp_path_factory.mktemp("inputs")
    f: dict[str, Path] = {}
    yamls = {
        "epochs_text": "epochs: ten\n",
        "momentum_quoted": 'momentum: "0.9"\n',
        "eps_quoted": 'eps: "1.0"\n',
        "epochs_fraction": "epochs: 1.5\n",
        "batch_bool": "batch_size: true\n",
        "workers_fraction": "workers: 1.7\n",
        "seed_text": 'seed: "abc"\n',
        "section_eps_text": "attack:\n  eps: big\n",
        "section_scalar": "attack: 5\n",
        "unknown_key": "epoch: 3\n",
        "unknown_section_key": "attack:\n  epochs: 3\n",
        "list": "- 1\n- 2\n",
        "bad_yaml": "epochs: [1, 2\n",
        "lr_nan": "lr: .nan\n",
        "method_null": "method: null\n",
    }
    for name, text in yamls.items():
        f[name] = root / f"{name}.yaml"
        f[name].write_text(text)
    f["binary"] = root / "binary.yaml"
    f["binary"].write_bytes(bytes(range(256)))
    f["folder"] = root / "a-folder"
    f["folder"].mkdir()
    f["a_file"] = root / "a-file.txt"
    f["a_file"].write_text("not a folder")
    f["missing"] = root / "missing"

    f["images_ok"] = _image_folder(root / "images-ok")
    f["images_empty_class"] = _image_folder(root / "images-empty-class")
    (f["images_empty_class"] / "train" / "emu").mkdir()
    f["images_corrupt_val"] = _image_folder(root / "images-corrupt-val")
    (f["images_corrupt_val"] / "val" / "dog" / "9.png").write_bytes(b"not a png at all")

    cifar = write_cifar10(root / "cifar-bad-labels")
    batch = pickle.loads((cifar / "test_batch").read_bytes())
    batch[b"labels"][3] = 12
    (cifar / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    f["cifar_bad_labels"] = cifar.parent

    run = fit(tiny_config(root / "runs", name="run", epochs=1, eval_limit=20)).run_dir
    f["run"] = run
    state = load_checkpoint(run / "best.pt")
    state["model_spec"]["name"] = "resnet18"  # weights of a small_cnn under another name
    f["relabelled_ckpt"] = root / "relabelled.pt"
    save_checkpoint(f["relabelled_ckpt"], state)
    return f


TRAIN = ["train", "--epochs", "1", "--no-progress", "--eval-limit", "20"]
EVAL = ["eval", "{run}", "--limit", "10", "--steps", "1", "--restarts", "1", "--no-checks"]
VIS = ["visualize", "targeted", "{run}", "--steps", "2"]

#: (case id, arguments with {name} placeholders, what the one line must contain)
CASES: list[tuple[str, list[str], str]] = [
    # -- config files: every field against its declared type --------------------------------
    ("yaml-epochs-text", [*TRAIN[:1], "--config", "{epochs_text}"], "--epochs: expected an integer, got 'ten'"),
    ("yaml-momentum-quoted", [*TRAIN, "--config", "{momentum_quoted}"], "--momentum: expected a finite number, got '0.9' (text)"),
    ("yaml-eps-quoted", [*TRAIN, "--config", "{eps_quoted}"], "--eps: expected a finite number, got '1.0' (text)"),
    ("yaml-epochs-fraction", [*TRAIN[:1], "--config", "{epochs_fraction}"], "--epochs: expected an integer, got 1.5"),
    ("yaml-batch-size-bool", [*TRAIN, "--config", "{batch_bool}"], "--batch-size: expected an integer, got True"),
    ("yaml-workers-fraction", [*TRAIN, "--config", "{workers_fraction}"], "--workers: expected an integer, got 1.7"),
    ("yaml-seed-text", [*TRAIN, "--config", "{seed_text}"], "--seed: expected an integer, got 'abc'"),
    ("yaml-section-eps-text", [*TRAIN, "--config", "{section_eps_text}"], "--eps: expected a finite number, got 'big'"),
    ("yaml-lr-nan", [*TRAIN, "--config", "{lr_nan}"], "--lr: expected a finite number, got nan"),
    ("yaml-method-null", [*TRAIN, "--config", "{method_null}"], "--method: expected text, got None"),
    ("yaml-section-scalar", [*TRAIN, "--config", "{section_scalar}"], "config section attack must be a mapping"),
    ("yaml-unknown-key", [*TRAIN, "--config", "{unknown_key}"], "unknown config keys: epoch"),
    ("yaml-key-in-wrong-section", [*TRAIN, "--config", "{unknown_section_key}"], "unknown config keys: attack.epochs"),
    ("config-is-a-folder", [*TRAIN, "--config", "{folder}"], "is a folder, not a YAML file"),
    ("config-missing", [*TRAIN, "--config", "{missing}"], "does not exist"),
    ("config-not-a-mapping", [*TRAIN, "--config", "{list}"], "must hold a mapping of keys to values, not list"),
    ("config-bad-yaml", [*TRAIN, "--config", "{bad_yaml}"], "is not valid YAML (line"),
    ("config-binary", [*TRAIN, "--config", "{binary}"], "is not a text (YAML) file"),
    # -- numeric flags: finite and in range -------------------------------------------------
    ("lr-gamma-nan", [*TRAIN, "--lr-gamma", "nan"], "--lr-gamma: expected a finite number, got nan"),
    ("momentum-nan", [*TRAIN, "--momentum", "nan"], "--momentum: expected a finite number, got nan"),
    ("weight-decay-inf", [*TRAIN, "--weight-decay", "inf"], "--weight-decay: expected a finite number, got inf"),
    ("weight-decay-negative", [*TRAIN, "--weight-decay", "-0.5"], "--weight-decay must be >= 0, got -0.5"),
    ("momentum-above-one", [*TRAIN, "--momentum", "1.5"], "momentum must be in [0, 1)"),
    ("lr-gamma-above-one", [*TRAIN, "--lr-gamma", "2"], "--lr-gamma must be in (0, 1], got 2"),
    ("lr-negative", [*TRAIN, "--lr", "-0.1"], "--lr must be a finite number > 0, got -0.1"),
    ("eps-zero", [*TRAIN, "--eps", "0"], "--eps must be a finite number > 0, got 0"),
    ("alpha-inf", [*TRAIN, "--alpha", "inf"], "--alpha: expected a finite number"),
    ("epochs-zero", [*TRAIN, "--epochs", "0"], "epochs must be >= 1"),
    ("epochs-fraction-flag", [*TRAIN, "--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
    ("batch-size-zero", [*TRAIN, "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("batch-size-too-large", [*TRAIN, "--batch-size", "5000"], "larger than the training set"),
    ("seed-negative", [*TRAIN, "--seed", "-1"], "seed must be >= 0"),
    ("workers-negative", [*TRAIN, "--workers", "-1"], "workers must be >= 0"),
    ("warmup-fraction-one", [*TRAIN, "--warmup-fraction", "1"], "--warmup-fraction must be in (0, 1), got 1"),
    ("train-eval-steps-zero", [*TRAIN, "--eval-steps", "0"], "--eval-steps must be >= 1, got 0"),
    ("steps-zero", [*TRAIN, "--method", "pgd", "--steps", "0"], "steps must be >= 1"),
    # -- contradictory or meaningless combinations ------------------------------------------
    ("fast-with-3-steps", [*TRAIN, "--method", "fast", "--steps", "3"], "method fast takes exactly 1 attack step, got --steps 3; for a 3-step attack use --method pgd"),
    ("standard-with-alpha", [*TRAIN, "--method", "standard", "--alpha", "0.1"], "--alpha given with method standard"),
    ("standard-with-steps", [*TRAIN, "--method", "standard", "--steps", "2"], "--steps given with method standard"),
    ("linf-eps-beyond-box", [*TRAIN, "--norm", "linf", "--eps", "2"], "eps 2 (linf) reaches every image: the largest linf distance between two 1x8x8 images in [0,1] is 1"),
    ("linf-eps-whole-box", [*TRAIN, "--norm", "linf", "--eps", "1"], "eps 1 (linf) reaches every image"),
    ("l2-eps-beyond-diameter", [*TRAIN, "--eps", "9"], "the largest l2 distance between two 1x8x8 images in [0,1] is 8"),
    ("early-stop-without-check", [*TRAIN, "--early-stop", "--overfit-check-size", "0"], "--early-stop needs the catastrophic-overfitting check; set --overfit-check-size > 0"),
    ("early-stop-standard", [*TRAIN, "--early-stop", "--method", "standard"], "--early-stop has no effect with method standard"),
    ("random-start-radius-linf", [*TRAIN, "--norm", "linf", "--eps", "0.1", "--random-start", "radius"], "random start 'radius' is not defined for linf"),
    ("unknown-method", [*TRAIN, "--method", "trades2"], "unknown method 'trades2' (--method)"),
    ("unknown-norm", [*TRAIN, "--norm", "l3"], "unknown norm 'l3' (--norm)"),
    ("unknown-schedule", [*TRAIN, "--schedule", "cosine"], "argument --schedule: invalid choice: 'cosine'"),
    ("unknown-amp", [*TRAIN, "--amp", "fp8"], "argument --amp: invalid choice: 'fp8'"),
    ("unknown-flag", [*TRAIN, "--learning-rate", "3"], "unrecognized arguments: --learning-rate 3"),
    ("abbreviated-flag", [*TRAIN, "--epoch", "3"], "unrecognized arguments: --epoch 3"),
    ("quiet-and-verbose", ["-q", *TRAIN, "-v"], "-q and -v contradict each other"),
    # -- data validated at load time, before the run folder ---------------------------------
    ("digits-with-data-dir", [*TRAIN, "--data-dir", "{folder}"], "dataset digits is bundled with scikit-learn and reads no files"),
    ("digits-image-size", [*TRAIN, "--image-size", "0"], "--image-size must be >= 1, got 0"),
    ("imagefolder-data-dir-file", [*TRAIN, "--dataset", "imagefolder", "--data-dir", "{a_file}"], "is a file; dataset imagefolder reads a folder"),
    ("imagefolder-data-dir-missing", [*TRAIN, "--dataset", "imagefolder", "--data-dir", "{missing}"], "does not exist"),
    ("imagefolder-no-data-dir", [*TRAIN, "--dataset", "imagefolder"], "dataset imagefolder needs --data-dir"),
    ("imagefolder-no-splits", [*TRAIN, "--dataset", "imagefolder", "--data-dir", "{folder}"], "needs a train/ and a val/ (or test/) folder"),
    ("imagefolder-empty-class", [*TRAIN, "--dataset", "imagefolder", "--data-dir", "{images_empty_class}", "--batch-size", "4"], "train/emu holds no .png/.jpg/.jpeg images"),
    ("imagefolder-corrupt-val-image", [*TRAIN, "--dataset", "imagefolder", "--data-dir", "{images_corrupt_val}", "--batch-size", "4"], "val/dog/9.png"),
    ("cifar-label-out-of-range", [*TRAIN, "--dataset", "cifar10", "--data-dir", "{cifar_bad_labels}"], "label 12 of image 3 is not a class index 0..9"),
    ("cifar-data-dir-file", [*TRAIN, "--dataset", "cifar10", "--data-dir", "{a_file}"], "is a file; dataset cifar10 reads a folder"),
    ("cifar-no-data-dir", [*TRAIN, "--dataset", "cifar10"], "dataset cifar10 needs --data-dir"),
    ("unknown-dataset", [*TRAIN, "--dataset", "mnist"], "unknown dataset 'mnist'"),
    ("resume-missing", ["train", "--resume", "{missing}"], "nothing to resume"),
    # -- eval -----------------------------------------------------------------------------------
    ("eval-steps-zero", [*EVAL, "--steps", "0"], "--steps must be >= 1, got 0"),
    ("eval-restarts-zero", [*EVAL, "--restarts", "0"], "--restarts must be >= 1, got 0"),
    ("eval-step-size-factor-nan", [*EVAL, "--step-size-factor", "nan"], "--step-size-factor: expected a finite number, got nan"),
    ("eval-step-size-factor-zero", [*EVAL, "--step-size-factor", "0"], "--step-size-factor must be a finite number > 0, got 0"),
    ("eval-batch-size-zero", [*EVAL, "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("eval-limit-zero", [*EVAL, "--limit", "0"], "--limit must be >= 1, got 0"),
    ("eval-seed-negative", [*EVAL, "--seed", "-3"], "--seed must be >= 0, got -3"),
    ("eval-eps-nan", [*EVAL, "--eps", "0,nan"], "eps values must be finite and >= 0, got nan"),
    ("eval-eps-decreasing", [*EVAL, "--eps", "1,0.5"], "strictly increasing"),
    ("eval-eps-text", [*EVAL, "--eps", "0,big"], "eps value 'big' is not a number"),
    ("eval-unknown-attack", [*EVAL, "--attack", "cw"], "unknown attack 'cw'"),
    ("eval-digits-data-dir", [*EVAL, "--data-dir", "{folder}"], "dataset digits is bundled"),
    ("eval-missing-model", ["eval", "{missing}"], "does not exist"),
    ("eval-not-a-checkpoint", ["eval", "{a_file}"], "is not a readable checkpoint"),
    ("eval-relabelled-checkpoint", ["eval", "{relabelled_ckpt}", "--limit", "5"], "records model resnet18 but holds the weights of a small_cnn"),
    # -- visualize: zero or negative budgets are not results ------------------------------------
    ("targeted-steps-zero", [*VIS, "--steps", "0"], "--steps must be a finite number > 0, got 0"),
    ("targeted-steps-negative", [*VIS, "--steps", "-5"], "--steps must be a finite number > 0, got -5"),
    ("targeted-eps-zero", [*VIS, "--eps", "0"], "--eps must be a finite number > 0, got 0"),
    ("targeted-eps-nan", [*VIS, "--eps", "nan"], "--eps: expected a finite number or null, got nan"),
    ("targeted-step-size-negative", [*VIS, "--step-size", "-1"], "--step-size must be a finite number > 0, got -1"),
    ("targeted-per-target-zero", [*VIS, "--per-target", "0"], "--per-target must be >= 1, got 0"),
    ("targeted-target-out-of-range", [*VIS, "--targets", "12"], "target class 12 is out of range"),
    ("features-nodes-zero", ["visualize", "features", "{run}", "--nodes", "0"], "--nodes must be >= 1, got 0"),
    ("features-node-negative", ["visualize", "features", "{run}", "--node", "-1"], "--node must be >= 0, got -1"),
    ("interpolate-lambda-nan", ["visualize", "interpolate", "{run}", "--lambdas", "0.5", "nan"], "--lambdas: expected a list (a finite number each), got [0.5, nan]"),
    ("interpolate-pairs-zero", ["visualize", "interpolate", "{run}", "--pairs", "0"], "--pairs must be >= 1, got 0"),
    ("visualize-labels-count", [*VIS, "--labels", "a", "b"], "got 2 --labels for 1 models"),
    ("visualize-relabelled-checkpoint", ["visualize", "targeted", "{relabelled_ckpt}", "--steps", "2"], "records model resnet18 but holds the weights of a small_cnn"),
]  # fmt: skip


def _fill(argv: list[str], files: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]


def _outputs(argv: list[str], tmp: Path) -> list[str]:
    """Send every output of the command into ``tmp`` so that the test can see any write."""
    if "--resume" in argv:
        return argv
    if argv[0] == "train" or (argv[0] == "-q" and argv[1] == "train"):
        return [*argv, "--out-dir", str(tmp / "runs")]
    if argv[0] in ("eval", "visualize"):
        return [*argv, "--out", str(tmp / "out")]
    return argv


def _tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_is_one_line_exit_2_and_writes_nothing(argv, expected, files, tmp_path, capsys):
    run_before = _tree(files["run"])
    argv = _outputs(_fill(argv, files), tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit instead of returning
        code = exc.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("fastrobust"), err
    assert expected in lines[0], err
    assert "Traceback" not in err + out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert not (tmp_path / "out").exists()
    assert _tree(files["run"]) == run_before  # the input run is untouched


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_config_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "locked.yaml"
    cfg.write_text("epochs: 1\n")
    cfg.chmod(0)
    assert main(["train", "--config", str(cfg), "--out-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "cannot read config file" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ inputs that must still work


def test_bare_command_prints_help_and_exits_0(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fastrobust") and "train" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["-q", "train"],
        ["train", "-q"],
        ["-v", "eval", "run"],
        ["eval", "run", "--verbose"],
        ["visualize", "targeted", "run", "-q"],
        ["-q", "visualize", "features", "run"],
        ["timing", "-q"],
    ],
)
def test_quiet_and_verbose_before_or_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet or args.verbose


def test_verbose_lists_the_mismatched_keys(files, tmp_path, capsys):
    """Without -v the mismatch is one line (the table above); with -v the keys come first."""
    argv = ["eval", str(files["relabelled_ckpt"]), "--out", str(tmp_path / "o"), "-v"]
    assert main(argv) == 2
    *listing, error = capsys.readouterr().err.strip().splitlines()
    assert "holds the weights of a small_cnn" in error
    assert any(line.startswith("unexpected weights (8): net.0.weight") for line in listing)
    assert any(line.startswith("missing weights") for line in listing)


def test_accepted_config_values(files, tmp_path):
    """Types a user may reasonably write keep working: ints for floats, ``1e-3`` without a
    dot (YAML 1.1 would read text), nulls for optional fields, sections and flat keys."""
    from fastrobust.training.config import TrainConfig

    cfg_file = tmp_path / "ok.yaml"
    cfg_file.write_text(
        "attack:\n  eps: 1\n  alpha: null\noptimisation:\n  lr: 1e-2\n  weight_decay: 0\n"
        "epochs: 2\nimage_size: null\naugment: false\n"
    )
    cfg = TrainConfig.from_yaml(cfg_file)
    assert (cfg.eps, cfg.lr, cfg.weight_decay, cfg.epochs) == (1, 0.01, 0, 2)
    assert cfg.alpha is None and cfg.augment is False
    assert TrainConfig(method="fast", steps=1).attack_steps == 1
    assert TrainConfig(method="pgd", steps=3, alpha=0.2).attack_steps == 3
    assert TrainConfig(norm="linf", eps=8 / 255).eps == pytest.approx(8 / 255)


def test_imagefolder_that_is_fine_trains_one_epoch(files, tmp_path, capsys):
    """The same checks pass a valid image folder (and decode its evaluation split)."""
    argv = [*TRAIN, "--dataset", "imagefolder", "--data-dir", str(files["images_ok"])]
    argv += ["--batch-size", "4", "--workers", "0", "--out-dir", str(tmp_path / "runs")]
    argv += ["--overfit-check-size", "0", "--eval-steps", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "runs").exists()


def test_visualize_progress_bar_and_no_progress(files, tmp_path, capsys):
    run = str(files["run"])
    assert main(["visualize", "targeted", run, "--steps", "3", "--out", str(tmp_path / "a")]) == 0
    assert "steps" in capsys.readouterr().err
    argv = ["visualize", "targeted", run, "--steps", "3", "--out", str(tmp_path / "b")]
    assert main([*argv, "--no-progress"]) == 0
    assert "steps" not in capsys.readouterr().err


def test_load_model_into_another_architecture_names_both(files):
    from fastrobust.checkpoint import load_model
    from fastrobust.errors import CheckpointError

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(CheckpointError) as info:
        load_model(files["run"], net=net)
    message = str(info.value)
    assert "holds a small_cnn model, not the Sequential it was asked to load into" in message
    assert "\n" not in message
