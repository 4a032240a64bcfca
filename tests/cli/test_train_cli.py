import subprocess
import sys

import pytest
import torch

from cifar_files import write_cifar10
from fastrobust.cli import main

FAST = ["--epochs", "1", "--no-progress", "--eval-limit", "50", "--eval-steps", "2"]


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_prints_accuracies_and_run_folder(tmp_path, capsys):
    code, out, err = _run(["-q", "train", "--out-dir", str(tmp_path), "--name", "a", *FAST], capsys)
    assert code == 0, err
    assert "validation accuracy: clean" in out and "adversarial" in out
    assert "test set (360 images), final weights: clean" in out
    assert "best epoch 1 (best.pt)" not in out  # the best epoch is the last: one line
    assert f"run folder: {tmp_path / 'a'}" in out


def test_train_prints_the_best_epoch_on_the_test_set_when_it_is_not_the_last(capsys):
    from fastrobust.cli.train import _report
    from fastrobust.training.run_folder import TrainResult

    result = TrainResult("r", epochs_done=3, best_epoch=1, best_value=0.5, time_to_best_s=1.0)
    result.test_images, result.test_clean_acc, result.test_adv_acc = 360, 0.9, 0.2
    result.best_test_clean_acc, result.best_test_adv_acc = 0.8, 0.3
    _report(result)
    out = capsys.readouterr().out
    assert "test set (360 images), final weights: clean 0.9000, adversarial 0.2000" in out
    assert "test set, best epoch 1 (best.pt): clean 0.8000, adversarial 0.3000" in out


def test_train_from_yaml_with_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: pgd\nsteps: 2\neps: 0.5\nepochs: 5\n")
    code, out, err = _run(
        ["-q", "train", "--config", str(cfg), "--out-dir", str(tmp_path), "--name", "y", *FAST],
        capsys,
    )
    assert code == 0, err
    written = (tmp_path / "y" / "config.yaml").read_text()
    assert "method: pgd" in written and "epochs: 1" in written and "eps: 0.5" in written
    assert "attack_alpha: 0.625" in written  # 2.5 * eps / steps, recorded resolved
    assert "random_start: ball" in written


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--model", "resnet9000"], "unknown model"),
        (["--method", "no-such-method"], "unknown method"),
        (["--norm", "l1"], "unknown norm"),
        (["--eps", "0"], "--eps must be a finite number > 0"),
        (["--eps", "-1"], "--eps must be a finite number > 0"),
        (["--alpha", "-0.1"], "--alpha must be a finite number > 0"),
        (["--batch-size", "100000"], "larger than the training set"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent/x"], "does not exist"),
        (["--dataset", "cifar10"], "needs --data-dir"),
        (["--random-start", "radius", "--norm", "linf"], "random start"),
        (["--config", "/nonexistent.yaml"], "does not exist"),
        (["--epochs", "many"], "invalid int value"),
        (["--resume", "/nonexistent/run"], "nothing to resume"),
        (["--resume", "/nonexistent/run", "--lr", "0.5"], "--lr cannot change when resuming"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run_folder(tmp_path, capsys, flags, message):
    code = None
    try:
        where = [] if "--resume" in flags else ["--out-dir", str(tmp_path), "--name", "bad"]
        code, out, err = _run(["train", *where, *flags], capsys)
    except SystemExit as exc:  # argparse type errors
        code = exc.code
        out, err = capsys.readouterr()
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_malformed_cifar_folder(tmp_path, capsys):
    folder = write_cifar10(tmp_path / "data", n_per_batch=4)
    (folder / "data_batch_3").write_bytes(b"\x80\x02garbage")
    code, _, err = _run(
        [
            "train",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path / "data"),
            "--out-dir",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 2 and "not a CIFAR python batch file" in err


def test_resume_of_corrupt_or_foreign_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"corrupt")
    code, _, err = _run(["train", "--resume", str(run)], capsys)
    assert code == 2 and "not a readable fastrobust checkpoint" in err
    torch.save({"state_dict": {}}, run / "last.pt")
    code, _, err = _run(["train", "--resume", str(run)], capsys)
    assert code == 2 and "not written by fastrobust" in err


def test_nan_loss_is_a_clean_error(tmp_path, capsys):
    code, _, err = _run(
        [
            "train",
            "--lr",
            "1e12",
            "--schedule",
            "constant",
            "--out-dir",
            str(tmp_path),
            "--name",
            "n",
            *FAST,
        ],
        capsys,
    )
    assert code == 2 and "loss became" in err and len(err.strip().splitlines()) == 1


def test_module_entry_point_and_help():
    done = subprocess.run(
        [sys.executable, "-m", "fastrobust", "train", "--eps", "-3"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--eps must be a finite number > 0" in done.stderr
    assert "Traceback" not in done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "fastrobust", "train", "--help"], capture_output=True, text=True
    )
    assert (
        helped.returncode == 0
        and "--early-stop" in helped.stdout
        and "--random-start" in helped.stdout
    )


def test_help_groups_flags_by_config_section(capsys):
    from fastrobust.training.config import SECTION_OF, SECTIONS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    positions = [out.index(f"\n{section}:\n") for section in SECTIONS]
    assert positions == sorted(positions)
    from fastrobust.cli import build_parser

    flag_of = build_parser().parse_args(["train"]).flag_of  # e.g. runtime.loggers: --logger
    for name, section in SECTION_OF.items():
        flag = flag_of.get(f"{section}.{name}", "--" + name.replace("_", "-"))
        start = out.index(f"\n{section}:\n")
        ends = [p for p in positions if p > start]
        assert flag in out[start : ends[0] if ends else len(out)], (flag, section)


def test_flag_types_come_from_the_annotations():
    from fastrobust.settings import flag_type, int_or_word

    assert flag_type(int | None) is int and flag_type(float) is float
    assert flag_type(bool) is bool and flag_type(str | None) is str
    assert flag_type(int | str) is int_or_word  # eval_every: a number or auto
    assert (int_or_word("3"), int_or_word("auto")) == (3, "auto")
    with pytest.raises(TypeError):
        flag_type(int | float)
    with pytest.raises(TypeError):
        flag_type(list)


def test_optional_int_flag_is_parsed_as_int(tmp_path, capsys):
    from fastrobust.cli import build_parser
    from fastrobust.cli.train import config_from_args

    args = build_parser().parse_args(["train", "--eval-limit", "7", "--no-augment", "--eps", "2"])
    cfg = config_from_args(args)
    assert cfg.evaluation.eval_limit == 7 and cfg.data.augment is False and cfg.attack.eps == 2.0


def test_version_is_defined_once_and_printed(capsys):
    from pathlib import Path

    import fastrobust

    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and '\nversion = "' not in pyproject
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"fastrobust {fastrobust.__version__}"
