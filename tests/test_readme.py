"""The README is the user's first page: its code fences are well formed and its Python API block
runs as written (with the training epochs shortened, in a scratch folder)."""

from __future__ import annotations

import os
import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, info string, body) of every fenced block; raises on an unclosed fence."""
    blocks: list[tuple[int, str, str]] = []
    open_at: tuple[int, str, str] | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if open_at is None:
            if match:
                open_at = (number, match.group(2), match.group(3).strip())
                body = []
        elif match and match.group(2).startswith(open_at[1]) and not match.group(3).strip():
            blocks.append((open_at[0], open_at[2], "\n".join(body)))
            open_at = None
        else:
            body.append(line)
    if open_at is not None:
        raise AssertionError(f"README.md: the fence opened at line {open_at[0]} is never closed")
    return blocks


def test_fences_are_closed_and_python_blocks_parse():
    for line, info, body in fenced_blocks(README.read_text()):
        if info == "python":
            compile(body, f"README.md:{line}", "exec")  # raises SyntaxError with the line


def test_fence_checker_catches_an_unclosed_fence():
    with pytest.raises(AssertionError, match="never closed"):
        fenced_blocks("text\n```python\nx = 1\n")


def code_outside_fences(text: str) -> list[str]:
    """Lines outside every fence that read as code: a comment ('# lowercase') that Markdown
    would render as a heading, or an assignment/call of the API."""
    inside = False
    found = []
    for line in text.splitlines()[1:]:  # line 1 is the title
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside and re.match(r"^(# [a-z]|[a-z_]+ = |[a-z_]+\.[a-z_]+\()", line):
            found.append(line)
    return found


def test_no_code_outside_the_fences():
    assert code_outside_fences(README.read_text()) == []


def test_code_outside_fences_is_detected():
    early_close = "# title\n```python\nx = 1\n```\n# looking inside\nres = fr.pgd(model)\n"
    assert code_outside_fences(early_close) == ["# looking inside", "res = fr.pgd(model)"]


def python_api_block() -> str:
    text = README.read_text()
    section = text.split("## Python API", 1)[1]
    blocks = [body for _, info, body in fenced_blocks(section) if info == "python"]
    assert blocks, "README has no python block under '## Python API'"
    return blocks[0]


@pytest.mark.usefixtures("one_thread")
def test_python_api_block_runs_as_written(tmp_path, monkeypatch):
    code = python_api_block()
    shortened = re.sub(r"epochs=\d+", "epochs=2", code)
    assert shortened != code, "the API block no longer trains: update this test"
    script = tmp_path / "readme_api.py"
    script.write_text(shortened)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runpy.run_path(str(script), run_name="__main__")
    assert any(os.scandir(tmp_path / "runs"))
