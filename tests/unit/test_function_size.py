"""House rule: no function over 60 lines in the shipped packages (tests are exempt)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edge_agent", "sensors_sim", "firmware_configs", "federation", "cloud",
            "fiberwatch")
LIMIT = 60


def long_functions(limit: int = LIMIT) -> list[str]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > limit:
                        out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n})")
    return out


def test_no_function_over_the_limit() -> None:
    assert long_functions() == []
