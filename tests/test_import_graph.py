"""No import cycle anywhere in src/fastrobust: data flows one way (docs/architecture.md).

Every ``import``/``from ... import`` of a fastrobust module counts, at module level, inside
``if TYPE_CHECKING:`` and inside functions alike: a cycle hidden in a function is still a cycle in
the design. Importing a package's ``__init__`` counts as importing that package module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "fastrobust"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The fastrobust modules ``path`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in known else base)
    found.discard(name)
    return {m for m in found if m in known}


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    files = sorted(root.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imported_modules(f, known) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_real_imports():
    graph = import_graph()
    assert "fastrobust.errors" in graph["fastrobust.checkpoint"]


# -- layers: which top-level module may import which (docs/architecture.md, "Layers") ------------
ARCHITECTURE = PACKAGE_ROOT.parents[1] / "docs" / "architecture.md"


def top_level(module: str) -> str:
    """``fastrobust.training.trainer`` -> ``training``; the package itself -> ``fastrobust``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fastrobust"


def documented_layers(text: str) -> dict[str, set[str]]:
    """The Layers table of docs/architecture.md: top-level module -> the top-level modules it may
    import. A row names its modules in backticks in the first column and what they may import in
    the second: backticked modules, ``foundations`` (every module of the foundations row) and
    ``everything``."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    names = [re.findall(r"`([\w.]+)`", row.split("|")[1]) for row in rows]
    foundations = names[0]
    every = {n for row in names for n in row}
    allowed: dict[str, set[str]] = {}
    for modules, row in zip(names, rows):
        cell = row.split("|")[2]
        may = set(re.findall(r"`([\w.]+)`", cell))
        if "foundations" in cell:
            may |= set(foundations)
        if "everything" in cell:
            may |= every
        for module in modules:
            allowed[module] = may - {module}
    return allowed


def layer_violations(graph: dict[str, set[str]], allowed: dict[str, set[str]]) -> list[str]:
    """Every import between top-level modules that the table does not allow (or of a module the
    table does not list)."""
    problems = []
    for module, imports in sorted(graph.items()):
        here = top_level(module)
        if here not in allowed:
            problems.append(f"{module}: top-level module {here!r} is not in the Layers table")
            continue
        for target in sorted(imports):
            there = top_level(target)
            if there != here and there not in allowed[here]:
                problems.append(f"{module} imports {target} ({here} may not import {there})")
    return problems


def test_imports_follow_the_documented_layers():
    allowed = documented_layers(ARCHITECTURE.read_text())
    problems = layer_violations(import_graph(), allowed)
    assert not problems, "\n".join(problems)


def test_the_layer_check_catches_an_upward_import():
    allowed = {"data": {"errors"}, "training": {"data", "errors"}, "errors": set()}
    graph = {"fastrobust.data.cifar": {"fastrobust.training.trainer"}, "fastrobust.errors": set()}
    assert layer_violations(graph, allowed) == [
        "fastrobust.data.cifar imports fastrobust.training.trainer (data may not import training)"
    ]
    assert layer_violations({"fastrobust.new": set()}, allowed)  # an unlisted module fails too


def test_the_layers_table_is_read_as_written():
    text = (
        "## Layers\n| modules | may import |\n|---|---|\n| `errors`, `seeding` | each other |\n"
        "| `data` | foundations |\n| `cli` | everything |\n## Next\n"
    )
    assert documented_layers(text) == {
        "errors": set(),
        "seeding": set(),
        "data": {"errors", "seeding"},
        "cli": {"errors", "seeding", "data"},
    }
