"""The shape of the code base: the three floors import only downwards (imports inside functions
included), there are no import cycles, modules and functions stay small, nothing keeps a run in
module-level state, and no file points outside the repository."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"channels": 1, "strategies": 2, "fedsim": 3}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    out = {}
    for pkg in FLOORS:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def imported_names(tree: ast.AST, package: str) -> list[str]:
    """Every module an import statement anywhere in ``tree`` names (function bodies included)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        targets = {resolve(n) for n in imported_names(ast.parse(f.read_text()), package)}
        graph[m] = {t for t in targets if t and t != m and not m.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_imports_only_go_down_the_floors() -> None:
    up = [f"{m} -> {t}" for m, ts in import_graph().items() for t in ts
          if FLOORS[t.split(".")[0]] > FLOORS[m.split(".")[0]]]
    assert up == []


def test_channels_know_nothing_of_flower_or_ray() -> None:
    bad = [f"{m}: {n}" for m, f in modules().items() if m.split(".")[0] == "channels"
           for n in imported_names(ast.parse(f.read_text()), m) if n.split(".")[0] in ("flwr", "ray")]
    assert bad == []


def test_the_checks_find_a_cycle_and_an_upward_import() -> None:
    graph = {"fedsim.a": {"fedsim.b"}, "fedsim.b": {"fedsim.a"}, "channels.x": set()}
    assert cycles(graph) == [["fedsim.a", "fedsim.b"]]
    tree = ast.parse("def f():\n    from fedsim.runtime import loop\n")
    assert "fedsim.runtime" in imported_names(tree, "channels")  # an import inside a function counts


def test_modules_and_functions_stay_small() -> None:
    big, long = [], []
    for m, f in modules().items():
        text = f.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            big.append(f"{m}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{m}.{node.name}: {n} lines")
    assert big == [] and long == []


def test_no_module_level_state_is_rebound_by_functions() -> None:
    """No ``global`` statement: a run cannot be carried from one call to the next in a module
    variable (caches keyed by their inputs are the documented exception)."""
    offenders = [m for m, f in modules().items()
                 if any(isinstance(n, ast.Global) for n in ast.walk(ast.parse(f.read_text())))]
    assert offenders == []


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.split()
    files = [ROOT / p for p in out if p.endswith((".py", ".md", ".toml", ".yml", ".yaml", ".txt", ".cfg"))]
    return [f for f in files if f.is_file() and f.name != "test_structure.py"]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_nothing_points_outside_the_repository_or_at_issue_numbers() -> None:
    # The source documents the project was built from live outside the repository; their names
    # are assembled from pieces so that this guard does not itself name them.
    folder = "sha" + "red"
    foreign = ("../" + folder, folder + "/reference", "ota-fl-" + "model.md", "flower-ray-" + "notes.md")
    outside = re.compile("|".join(re.escape(name) for name in foreign))
    issue = re.compile(r"\bissues? #?\d+\b|\(issue\b", re.IGNORECASE)
    bad = [f"{f.relative_to(ROOT)}:{i}" for f in tracked_text_files()
           for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
           if outside.search(line) or issue.search(line)]
    assert bad == []
