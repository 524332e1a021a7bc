"""The package layers: ``bench`` (harness, data) uses ``models`` and ``geomstruct``; ``models`` never imports
``bench``; ``geomstruct`` imports neither.

Every ``.py`` file under ``models/`` and ``geomstruct/`` is parsed with :mod:`ast` and every import is checked,
wherever it sits (module level, inside a function, under ``if TYPE_CHECKING``), as are
``importlib.import_module("...")`` and ``__import__("...")`` calls with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "models": ("bench",),
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
