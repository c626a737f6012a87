"""The package's shape, checked from its source: who imports the CLI, import cycles, function length."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "resshift"
# Modules whose functions must stay short enough to read in one screen (docs/architecture.md).
SHORT_FUNCTION_MODULES = ("pipeline", "diffusion", "tiling", "training.trainer")
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules that `name` imports, at module level or inside functions."""
    package = name if name in known and (PACKAGE / Path(*name.split(".")[1:]) / "__init__.py").exists() \
        else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    trees = modules()
    known = set(trees)
    return {name: imported(name, tree, known) for name, tree in trees.items()}


def test_the_graph_sees_the_package(graph):
    # A sanity check of the parser itself: these edges exist.
    assert "resshift.pipeline" in graph["resshift.tasks"]
    assert "resshift.batch" in graph["resshift.cli.batch"]
    assert "resshift.training.trainer" in graph["resshift.cli.train"]     # a function-level import


def test_nothing_outside_the_cli_imports_it(graph):
    offenders = sorted(f"{name} -> {target}" for name, targets in graph.items()
                       if not name.startswith("resshift.cli") and name != "resshift.__main__"
                       for target in targets if target.startswith("resshift.cli"))
    assert offenders == []


def test_no_import_cycles(graph):
    # A package imports its own modules through __init__; edges into a package's __init__ from inside it
    # are how Python resolves `from . import x`, not a cycle of logic.
    edges = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("module", SHORT_FUNCTION_MODULES)
def test_functions_are_short(module):
    path = PACKAGE / (module.replace(".", "/") + ".py")
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []
