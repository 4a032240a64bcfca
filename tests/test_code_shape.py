"""The shape docs/architecture.md promises, measured on the source: no class over 250 lines, no
function over 100 lines (parser construction excepted), and no function in ``cli/`` over 40 lines
(the CLI parses, calls one library function and prints; workflows live in the library)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "fastrobust"
MAX_CLASS, MAX_FUNCTION, MAX_CLI_FUNCTION = 250, 100, 40
#: functions that only build an argparse parser (a list of flags, not logic)
PARSER_BUILDERS = {"add_parser", "build_parser"}


def definitions(path: Path) -> list[tuple[str, str, int]]:
    """``(kind, qualified name, lines)`` of every class and function defined in ``path``."""
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                name = f"{prefix}{child.name}"
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                found.append((kind, name, lines))
                visit(child, f"{name}.")

    visit(ast.parse(path.read_text()), "")
    return found


def oversized(root: Path = PACKAGE_ROOT) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        in_cli = path.relative_to(root).parts[0] == "cli"
        for kind, name, lines in definitions(path):
            if kind == "class":
                limit = MAX_CLASS
            elif name.rsplit(".", 1)[-1] in PARSER_BUILDERS:
                continue
            else:
                limit = MAX_CLI_FUNCTION if in_cli else MAX_FUNCTION
            if lines > limit:
                where = path.relative_to(root)
                problems.append(f"{where}: {kind} {name} has {lines} lines (at most {limit})")
    return problems


def test_no_class_or_function_is_oversized():
    problems = oversized()
    assert not problems, "\n".join(problems)


def test_the_measure_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION + 1))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "cli").mkdir()
    cli_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_CLI_FUNCTION))
    (tmp_path / "cli" / "run.py").write_text(
        f"def run():\n{cli_body}\n\ndef add_parser():\n{body}\n"
    )
    assert oversized(tmp_path) == [
        f"cli/run.py: function run has {MAX_CLI_FUNCTION + 1} lines (at most {MAX_CLI_FUNCTION})",
        f"long.py: function long has {MAX_FUNCTION + 2} lines (at most {MAX_FUNCTION})",
    ]
