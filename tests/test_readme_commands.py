"""Every command in the README's bash blocks runs as written, in order, in a fresh folder.

Blocks preceded by ``<!-- not run by tests: REASON -->`` need what a test machine lacks (GPUs,
CIFAR-10 or ImageNet on disk, several machines) or are the set-up itself (``.ci/run`` runs that
one on a fresh clone). Budgets are shortened so the whole README runs in a few minutes: training
epochs divided by 10 (at least 1; 3 where the README relies on the default 30), evaluation with
5 steps and 2 restarts (AutoAttack versions keep their fixed budgets: the README gives them few
points), timing measurements with one repeat over two batch sizes. Nothing else
changes: the same flags, names and order a user types."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from test_readme import FENCE

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*not run by tests:\s*(.+?)\s*-->")


def runnable_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(line, commands) of each bash block not marked as skipped, continuation lines joined."""
    blocks: list[tuple[int, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        info, start = match.group(3).strip(), i
        end = next(j for j in range(i + 1, len(lines)) if FENCE.match(lines[j]))
        before = [line for line in lines[:start] if line.strip()][-1:]
        if info == "bash" and not (before and SKIP.search(before[0])):
            blocks.append((start + 1, join_commands(lines[start + 1 : end])))
        i = end + 1
    return blocks


def join_commands(body: list[str]) -> list[str]:
    commands, current = [], ""
    for raw in body:
        line = strip_comment(raw).rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            commands.append(current.strip())
        current = ""
    return commands


def strip_comment(line: str) -> str:
    """The line without a trailing shell comment (``#`` outside quotes)."""
    quote = None
    for k, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k]
    return line


def _set_flag(words: list[str], flag: str, value: str) -> list[str]:
    if flag in words:
        k = words.index(flag)
        return words[: k + 1] + [value] + words[k + 2 :]
    return words + [flag, value]


def shortened(command: str) -> str:
    """The command with the budgets shortened as the module docstring says."""
    words = shlex.split(command)
    if "fastrobust" not in words:
        return command
    sub = words[words.index("fastrobust") + 1] if words[-1] != "fastrobust" else ""
    if sub == "train" and "--help" not in words:
        if "--epochs" in words:
            k = words.index("--epochs")
            words[k + 1] = str(max(1, int(words[k + 1]) // 10))
        elif "--resume" not in words:
            words += ["--epochs", "3"]
        words += ["--no-progress"]
    elif sub == "eval" and not any(w.startswith("autoattack") for w in words):
        # (AutoAttack's versions fix their own budgets; the README runs them on a few points)
        words = _set_flag(_set_flag(words, "--steps", "5"), "--restarts", "2")
    elif sub == "timing" and ("--runs" not in words or "--measure" in words):
        words = _set_flag(_set_flag(words, "--repeats", "1"), "--batch-sizes", "32,64")
    return shlex.join(words)


def test_shortening_changes_budgets_only():
    assert shortened("fastrobust train --method pgd --steps 7 --name pgd7") == (
        "fastrobust train --method pgd --steps 7 --name pgd7 --epochs 3 --no-progress"
    )
    assert shortened("fastrobust train --resume runs/c --epochs 20") == (
        "fastrobust train --resume runs/c --epochs 2 --no-progress"
    )
    assert shortened("fastrobust eval runs/a --steps 20 --restarts 10") == (
        "fastrobust eval runs/a --steps 5 --restarts 2"
    )
    assert (
        strip_comment('fastrobust x --labels "a # b"  # note') == 'fastrobust x --labels "a # b"  '
    )


def test_the_readme_has_runnable_commands():
    commands = [c for _, block in runnable_blocks(README.read_text()) for c in block]
    assert any(c.startswith("fastrobust train") for c in commands)
    assert any(c.startswith("fastrobust eval") for c in commands)


@pytest.mark.slow
def test_every_readme_command_runs_in_order(tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    bin_dir = str(Path(sys.executable).parent)
    env = dict(
        os.environ,
        PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
        PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
    )
    for line, block in runnable_blocks(README.read_text()):
        for command in block:
            run = shortened(command)
            done = subprocess.run(
                ["bash", "-c", run], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, (
                f"README.md:{line}: `{run}` exited {done.returncode}\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
