"""The layering rule, checked on the source: no import from a lower layer to a higher one.

Layers, bottom up: ``edge_agent`` <- ``sensors_sim``, ``firmware_configs`` <- ``federation``
<- ``cloud`` <- ``fiberwatch``. A package may import its own layer's modules and any lower
layer; ``sensors_sim`` and ``firmware_configs`` share a layer but not each other. Every
``import`` counts, top-level or inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: package -> the project packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "edge_agent": set(),
    "sensors_sim": {"edge_agent"},
    "firmware_configs": {"edge_agent"},
    "federation": {"edge_agent", "sensors_sim", "firmware_configs"},
    "cloud": {"edge_agent", "sensors_sim", "firmware_configs", "federation"},
    "fiberwatch": {"edge_agent", "sensors_sim", "firmware_configs", "federation", "cloud"},
}


def imported_packages(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``tree``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, top in imported_packages(ast.parse(path.read_text(), str(path))):
            if top in ALLOWED and top != package and top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_upward_import(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_lazy_imports() -> None:
    tree = ast.parse("def f():\n    from fiberwatch.bench import model\n")
    assert imported_packages(tree) == [(2, "fiberwatch")]
