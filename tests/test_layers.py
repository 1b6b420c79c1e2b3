"""The allowed import directions between Catur's packages, and no import circles.

The rules (docs/explanation/architecture.md), enforced over every import statement in the source,
those inside functions included:

* the core, ``catur/*`` outside ``catur/cli/`` and ``catur/service/``, imports nothing from
  ``catur.sim``, ``catur.traces``, ``catur.training``, ``catur.service`` or ``catur.cli``;
* the service, ``catur/service/``, imports the core (and the registry in it), never
  ``catur.sim``, ``catur.training`` or ``catur.cli``;
* the simulator ``sim/`` (``catur.sim``) and the trace tools ``traces/`` (``catur.traces``)
  never import ``catur.training`` or ``catur.cli``;
* training (``catur.training``) never imports ``catur.cli``: only the CLI sees everything;
* no import circle among the project's modules, however the imports are spelled.

The source folders and their package names come from ``pyproject.toml``'s ``package-dir``, so
the test follows the layout rather than a copy of it. It reads the files with :mod:`ast` only:
nothing is imported, and nothing outside the repository is needed.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Who may not import whom: (importer prefix, importer exceptions) -> forbidden prefixes.
CORE_EXCEPT = ("catur.sim", "catur.traces", "catur.training", "catur.service", "catur.cli")
RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("catur", CORE_EXCEPT, CORE_EXCEPT),
    ("catur.service", (), ("catur.sim", "catur.training", "catur.cli")),
    ("catur.sim", (), ("catur.training", "catur.cli")),
    ("catur.traces", (), ("catur.training", "catur.cli")),
    ("catur.training", (), ("catur.cli",)),
]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def source_modules(root: Path) -> dict[str, Path]:
    """Every module of the project: dotted name -> file, from pyproject's package-dir."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = config["package-dir"]
    modules: dict[str, Path] = {}
    for package, folder in package_dir.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if any(p == "__pycache__" for p in parts):
                continue
            inner = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            name = f"{package}.{inner}" if inner else package
            # A folder mapped on its own (catur.sim = sim/) wins over the same name under catur/.
            modules.setdefault(name, path)
    return modules


def imported_names(name: str, path: Path) -> list[tuple[str, int]]:
    """Every dotted name an import statement of the module refers to, with its line.

    ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (``c`` may be a module); relative
    imports are resolved against the module's package. Imports inside functions count too.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Module -> {project module it imports: line}, each target resolved to the longest
    module name that exists (``catur.metrics.summarize`` -> ``catur.metrics``)."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in imported_names(name, path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def forbidden_imports(graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> list[str]:
    bad = []
    for name, edges in sorted(graph.items()):
        for prefix, exceptions, forbidden in RULES:
            if not _within(name, prefix) or any(_within(name, e) for e in exceptions):
                continue
            for target, line in sorted(edges.items()):
                if any(_within(target, f) for f in forbidden):
                    bad.append(f"{_shown(modules[name])}:{line}: {name} imports {target}")
    return bad


def import_circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
    return circles


@pytest.fixture(scope="module")
def project():
    modules = source_modules(ROOT)
    return modules, import_graph(modules)


def test_every_package_folder_is_read(project):
    modules, _ = project
    for package in ("catur", "catur.cli", "catur.service", "catur.sim", "catur.traces", "catur.training"):
        assert package in modules, f"{package} not found: is pyproject's package-dir still right?"
    assert len(modules) > 50


def test_no_forbidden_imports(project):
    modules, graph = project
    bad = forbidden_imports(graph, modules)
    assert not bad, "imports against the layering (docs/explanation/architecture.md):\n" + "\n".join(bad)


def test_no_import_circles(project):
    _, graph = project
    circles = import_circles(graph)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


# --- the checker itself catches what it should (a test that cannot fail proves nothing) ---------


def _toy_project(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "catur" = "catur", "catur.sim" = "sim" }\n'
    )
    for rel, text in {"catur/__init__.py": "", "sim/__init__.py": "", **files}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_checker_finds_a_function_level_forbidden_import(tmp_path):
    root = _toy_project(tmp_path, {
        "catur/core.py": "def f():\n    from catur.sim import engine\n    return engine\n",
        "sim/engine.py": "from catur import core\n",
    })
    modules = source_modules(root)
    assert set(modules) == {"catur", "catur.core", "catur.sim", "catur.sim.engine"}
    bad = forbidden_imports(import_graph(modules), modules)
    # Both the package (its __init__ runs) and the module are named, each with the line.
    assert [b.split(": ", 1)[1] for b in bad] == ["catur.core imports catur.sim", "catur.core imports catur.sim.engine"]
    assert all(b.split(": ", 1)[0].endswith("core.py:2") for b in bad)


def test_checker_finds_a_relative_import_circle(tmp_path):
    root = _toy_project(tmp_path, {
        "catur/a.py": "from . import b\n",
        "catur/b.py": "def g():\n    from .c import x\n",
        "catur/c.py": "import catur.a\nx = 1\n",
        "catur/d.py": "from catur.a import thing\n",
    })
    modules = source_modules(root)
    graph = import_graph(modules)
    assert import_circles(graph) == [["catur.a", "catur.b", "catur.c"]]
    assert forbidden_imports(graph, modules) == []
