"""``fit()`` from a plain script (no logging configured) shows progress and the epoch summary
on stderr; the ``fastrobust`` logger silences them; configured logging is left alone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from fastrobust.default_logging import log_to_stderr_unless_configured

SRC = Path(__file__).resolve().parents[2] / "src"
SCRIPT = """
import logging, sys
import fastrobust as fr
def run(name):
    fr.fit(fr.TrainConfig(epochs=1, batch_size=256, eval_limit=20, eval_steps=1,
                          overfit_check_size=16, device="cpu", out_dir=sys.argv[1], name=name))
run("shown")
sys.stderr.write("SILENCED BELOW\\n")
logging.getLogger("fastrobust").setLevel(logging.WARNING)
run("silenced")
"""


def test_plain_script_sees_progress_and_summary_until_silenced(tmp_path):
    """One interpreter (importing torch costs seconds): first as a new user, then silenced."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # library code does not print
    shown, silenced = done.stderr.split("SILENCED BELOW\n")
    assert "epoch 1/1 | loss" in shown and "val adv" in shown
    assert "validation every 1 epoch(s) on a class-stratified sample of 20 of 360 test" in shown
    assert "it/s" in shown  # the progress bar
    assert silenced == ""
    assert (tmp_path / "silenced" / "summary.json").is_file()


def test_configured_logging_is_left_alone():
    logger = logging.getLogger("fastrobust")
    with log_to_stderr_unless_configured():  # pytest has handlers on the root logger
        assert logger.handlers == [] and logger.level == logging.NOTSET
