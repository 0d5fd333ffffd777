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


#: federation's subpackages, bottom up: subpackage -> the sibling subpackages it may import
#: (`federation.processes`, plain plumbing, is open to all)
FEDERATION: dict[str, set[str]] = {
    "model": set(),
    "registry": {"model"},
    "flower": {"model", "registry"},
}


def federation_parts(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, federation part) of every import of ``federation.<part>`` in ``tree``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = ([f"federation.{a.name}" for a in node.names]
                    if node.module == "federation" else [node.module])
        else:
            continue
        out += [(node.lineno, m.split(".")[1]) for m in mods
                if m.startswith("federation.")]
    return out


@pytest.mark.parametrize("part", sorted(FEDERATION))
def test_federation_subpackages_import_downward(part: str) -> None:
    allowed = FEDERATION[part] | {part, "processes"}
    bad = []
    for path in sorted((ROOT / "federation" / part).rglob("*.py")):
        for line, imported in federation_parts(ast.parse(path.read_text(), str(path))):
            if imported not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports federation.{imported}")
    assert bad == []


def test_the_federation_check_sees_each_form() -> None:
    tree = ast.parse("import federation.flower.rounds\n"
                     "def f():\n    from federation import registry, processes\n"
                     "    from federation.model.task import fit\n")
    assert sorted(federation_parts(tree)) == [(1, "flower"), (3, "processes"),
                                              (3, "registry"), (4, "model")]


def test_the_check_sees_lazy_imports() -> None:
    tree = ast.parse("def f():\n    from fiberwatch.bench import model\n")
    assert imported_packages(tree) == [(2, "fiberwatch")]
