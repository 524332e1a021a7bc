"""The layers of the project (docs/implementation.md#layout-and-layers), checked on its import graph.

Packages: ``bench`` (harness, data) uses ``models`` and ``geomstruct``; ``models`` never imports ``bench`` or
``geomstruct``; ``geomstruct`` imports neither. Every ``.py`` file under ``models/`` and ``geomstruct/`` is parsed
with :mod:`ast` and every import is checked, wherever it sits (module level, inside a function, under
``if TYPE_CHECKING``), as are ``importlib.import_module("...")`` and ``__import__("...")`` calls with a literal name.

Within the project (:func:`import_graph`: every import of a project module by a project module, with the packages
whose ``__init__`` the import runs): no cycle; no import placed inside a function (but the optional backends of
:data:`LAZY_ALLOWED`); and every import goes down or sideways in :data:`BENCH_LAYERS`: the data wing (``bench.data``)
imports nothing of ``bench`` but the shared low-level modules, the run core nothing of the study tools or the CLI,
the study tools nothing of the CLI. At the bottom of the project, :data:`BOTTOM` (the run-folder format's owner)
imports nothing of the project; the shared modules of ``bench`` import nothing of the project but it.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "models": ("bench", "geomstruct"),
    "geomstruct": ("bench", "models"),
}
"""Package -> top-level packages it must not import."""


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in a file (relative imports resolved against ``path``)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join((*base, node.module) if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def violations(package: str) -> list[str]:
    """``file:line imports module`` for every forbidden import of ``package``."""
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in FORBIDDEN[package]:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_the_layers_above(package):
    assert (ROOT / package / "__init__.py").is_file()
    found = violations(package)
    assert not found, f"{package} must not import {' or '.join(FORBIDDEN[package])}:\n" + "\n".join(found)


def test_the_checker_sees_every_kind_of_import(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    folder = tmp_path / "models" / "sub"
    folder.mkdir(parents=True)
    (folder / "mod.py").write_text(
        "import os\n"
        "import bench.data\n"
        "from bench import scan\n"
        "from .. import sibling\n"
        "def f():\n"
        "    from bench.data.scan import Scan\n"
        "    import importlib\n"
        "    return importlib.import_module('bench.run'), __import__('bench')\n"
    )
    assert imported_modules(folder / "mod.py") == [
        (1, "os"),
        (2, "bench.data"),
        (3, "bench"),
        (4, "models"),
        (6, "bench.data.scan"),
        (7, "importlib"),
        (8, "bench.run"),
        (8, "bench"),
    ]
    assert len(violations("models")) == 5


# --- the project's import graph -------------------------------------------------------------------------------------

PROJECT = ("bench", "models", "geomstruct")
BOTTOM = ("geomstruct", "geomstruct.run_folder")
"""The bottom of the project (with its empty package): the run-folder format's owner, which imports nothing of the
project, so that ``bench`` (which writes run folders) and ``geomstruct`` (which reads them) both use it."""
SHARED = ("bench.files", "bench.distributed")
"""Shared low-level modules of ``bench``: they import nothing of the project but :data:`BOTTOM`, and every layer of
``bench`` uses them."""
BENCH_LAYERS = (
    ("shared", ("bench", *SHARED)),
    ("data wing", ("bench.data",)),
    ("run core", ()),  # every other module of bench
    ("study tools", ("bench.study",)),
    ("CLI", ("bench.run",)),
)
"""The layers of ``bench``, bottom first: a module imports only modules of its own layer or of the layers below."""
LAZY_ALLOWED = {
    "models.students.sparse.backends": {
        "models.students.sparse.spconv_backend",  # imports the optional spconv at its top: only when chosen
        "models.students.sparse.torchsparse_backend",  # imports the optional torchsparse (built from source)
    },
}
"""Project modules that may be imported inside a function, by importer: adapters of optional packages only."""


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``imported`` at ``line`` (inside the function ``function``, or at module level)."""

    importer: str
    imported: str
    line: int
    function: str | None


def module_name(path: Path, root: Path) -> str:
    """``a.b.c`` of ``<root>/a/b/c.py`` (``a.b`` of ``a/b/__init__.py``)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path, packages: tuple[str, ...] = PROJECT) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by name."""
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PROJECT) -> list[Edge]:
    """Every import of a project module by a project module. ``import a.b.c`` and ``from a.b import c`` import
    ``a.b.c`` (or ``a.b`` when ``c`` is a name, not a module) and run the ``__init__`` of ``a`` and ``a.b``: those
    packages are imported too, but for the importer's own packages (initialised before it)."""
    modules = project_modules(root, packages)
    edges: list[Edge] = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = importer.split(".") if path.name == "__init__.py" else importer.split(".")[:-1]
        own = set(_ancestors(importer))
        functions: dict[ast.AST, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if inner is not node:
                        functions.setdefault(inner, node.name)  # the outermost function holding it
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
                named = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            targets: set[str] = set()
            for name in named:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name:
                    targets |= {name, *(a for a in _ancestors(name) if a in modules and a not in own)}
            for target in sorted(targets - {importer}):
                edges.append(Edge(importer, target, node.lineno, functions.get(node)))
    return edges


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def bench_layer(module: str) -> int:
    """The position of a ``bench`` module in :data:`BENCH_LAYERS` (the run core: every module not listed)."""
    for position, (_, prefixes) in reversed(list(enumerate(BENCH_LAYERS))):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "bench"):
            return position
    return 0 if module == "bench" else 2


def upward(edges: list[Edge]) -> list[str]:
    """Every import of a ``bench`` module by a ``bench`` module of a lower layer."""
    out = []
    for e in edges:
        if e.importer.split(".")[0] == e.imported.split(".")[0] == "bench":
            have, want = bench_layer(e.importer), bench_layer(e.imported)
            if want > have:
                out.append(
                    f"{e.importer}:{e.line} ({BENCH_LAYERS[have][0]}) imports {e.imported} ({BENCH_LAYERS[want][0]})"
                )
    return out


def function_level(edges: list[Edge]) -> list[str]:
    """Every project import placed inside a function, but those of :data:`LAZY_ALLOWED`."""
    return [
        f"{e.importer}:{e.line} in {e.function}() imports {e.imported}"
        for e in edges
        if e.function is not None and e.imported not in LAZY_ALLOWED.get(e.importer, set())
    ]


def test_the_import_graph_has_no_cycle():
    edges = import_graph()
    assert len({e.importer for e in edges}) > 50  # the graph sees the project
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_project_module_is_imported_inside_a_function():
    found = function_level(import_graph())
    assert not found, "imports placed inside a function:\n" + "\n".join(found)


def test_every_import_of_bench_goes_down_its_layers():
    found = upward(import_graph())
    assert not found, "imports that go up a layer:\n" + "\n".join(found)


def test_the_shared_modules_import_nothing_of_the_project_but_the_bottom():
    found = [
        f"{e.importer}:{e.line} imports {e.imported}"
        for e in import_graph()
        if e.importer in SHARED and e.imported not in BOTTOM
    ]
    assert not found, "\n".join(found)


def test_the_bottom_imports_nothing_of_the_project():
    found = [f"{e.importer}:{e.line} imports {e.imported}" for e in import_graph() if e.importer in BOTTOM]
    assert not found, "\n".join(found)


def test_the_graph_checker_finds_cycles_function_imports_and_upward_imports(tmp_path):
    def write(name: str, text: str = "") -> None:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    write("bench/__init__.py")
    write("bench/data/__init__.py", "from bench.data.a import A\n")
    write("bench/data/a.py", "from bench.data.sub.c import C\nA = 1\n")  # through sub/__init__: a cycle
    write("bench/data/sub/__init__.py", "from bench.data.sub.b import B\n")
    write("bench/data/sub/b.py", "from bench.data.a import A\nB = 1\n")
    write("bench/data/sub/c.py", "C = 1\n")
    write("bench/data/d.py", "def f():\n    from bench.data import a\n")  # a function-level import
    write("bench/data/e.py", "import bench.run\n")  # the data wing imports the CLI: up four layers
    write("bench/run.py", "from . import distributed\n")
    write("bench/distributed.py")
    edges = import_graph(tmp_path, ("bench",))
    assert cycles(edges) == [["bench.data.a", "bench.data.sub", "bench.data.sub.b"]]
    assert function_level(edges) == ["bench.data.d:2 in f() imports bench.data.a"]
    assert upward(edges) == ["bench.data.e:1 (data wing) imports bench.run (CLI)"]
    assert Edge("bench.run", "bench.distributed", 1, None) in edges  # a relative import, resolved
    assert not [e for e in edges if e.importer == "bench.data.a" and e.imported == "bench.data"]  # own package
