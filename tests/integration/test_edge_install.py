"""A gateway installs and runs with the ``edge`` extra alone: no torch, TensorFlow, Flower, FastAPI.

One venv per test run (module fixture): ``python -m venv``, then ``pip install 'SRC[edge]'``
from a copy of the work tree, with dependencies resolved from the package index as a user's pip
would. Measured here (2 cores, no pip cache): 45-130 s for the venv, then ~15 s for the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# the venv is built inside the first test: give it more than the default 600 s
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "tensorflow", "flwr", "fastapi")
GATEWAY_MODULES = ("edge_agent.config", "edge_agent.features", "edge_agent.wire")
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".mypy_cache", ".fiberwatch", ".benchmarks", "runs", "tests", "*.pyc", "*.so",
)


@dataclass(frozen=True)
class EdgeVenv:
    root: Path
    install_s: float

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def fiberwatch(self) -> Path:
        return self.root / "bin" / "fiberwatch"

    def run(self, *argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
        """Run in the venv, from a folder without our sources (so imports come from the venv)."""
        return subprocess.run([str(a) for a in argv], cwd=cwd, env=_clean_env(),
                              capture_output=True, text=True, timeout=300)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> EdgeVenv:
    root = tmp_path_factory.mktemp("edge-install")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    venv = root / "venv"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_clean_env(),
                   timeout=300)
    pip = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--disable-pip-version-check",
         "-q", f"{src}[edge]"],
        cwd=root, env=_clean_env(), capture_output=True, text=True, timeout=1200,
    )
    assert pip.returncode == 0, f"pip install [edge] failed:\n{pip.stdout}\n{pip.stderr}"
    install_s = time.monotonic() - t0
    print(f"\nedge venv: venv + pip install [edge] took {install_s:.0f} s", file=sys.stderr)
    return EdgeVenv(venv, install_s)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory with none of our packages in it."""
    return tmp_path


def test_dependencies_are_consistent(edge_venv: EdgeVenv, outside: Path) -> None:
    check = edge_venv.run(edge_venv.python, "-m", "pip", "check", cwd=outside)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("module", FORBIDDEN)
def test_the_heavy_stacks_are_not_installed(edge_venv: EdgeVenv, outside: Path,
                                            module: str) -> None:
    probe = edge_venv.run(
        edge_venv.python, "-c",
        f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is not None)",
        cwd=outside,
    )
    assert probe.returncode == 0, f"{module} is importable in the edge venv"


def test_gateway_modules_import_from_the_venv(edge_venv: EdgeVenv, outside: Path) -> None:
    code = (
        f"import {', '.join(GATEWAY_MODULES)}, sys\n"
        "import edge_agent\n"
        "from edge_agent.features import default_kernel\n"
        "assert default_kernel() == 'c', 'the C feature kernel was not built'\n"
        "print(edge_agent.__file__)\n"
        f"heavy = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    probe = edge_venv.run(edge_venv.python, "-c", code, cwd=outside)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(edge_venv.root)


def test_edge_main_imports_from_the_venv(edge_venv: EdgeVenv, outside: Path) -> None:
    has_main = edge_venv.run(
        edge_venv.python, "-c",
        "import importlib.util, sys; sys.exit(importlib.util.find_spec('edge_agent.main') is None)",
        cwd=outside,
    )
    if has_main.returncode != 0:
        pytest.skip("edge_agent.main does not exist yet")
    probe = edge_venv.run(edge_venv.python, "-c", "import edge_agent.main", cwd=outside)
    assert probe.returncode == 0, probe.stderr


def test_the_command_line_loads_without_the_heavy_stacks(edge_venv: EdgeVenv,
                                                         outside: Path) -> None:
    """`fiberwatch --help` imports every subcommand module: none may import torch at the top."""
    for argv in (["--help"], ["edge", "--help"], ["config", "check", "--help"]):
        probe = edge_venv.run(edge_venv.fiberwatch, *argv, cwd=outside)
        assert probe.returncode == 0, f"fiberwatch {' '.join(argv)}:\n{probe.stderr}"


def test_config_check_runs_from_the_venv(edge_venv: EdgeVenv, outside: Path) -> None:
    example = REPO / "firmware_configs/gateways/well-a.toml"
    ok = edge_venv.run(edge_venv.fiberwatch, "config", "check", example, cwd=outside)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"OK {example} (gateway)\n"

    bad = outside / "bad.toml"
    bad.write_text(example.read_text().replace("port = 8883", "port = 0"))
    fail = edge_venv.run(edge_venv.fiberwatch, "config", "check", bad, cwd=outside)
    assert fail.returncode == 1
    assert fail.stderr.startswith(f"{bad}: broker.port: Input should be greater than or equal")


def test_the_examples_ship_in_the_package(edge_venv: EdgeVenv, outside: Path) -> None:
    where = edge_venv.run(edge_venv.python, "-c",
                          "import firmware_configs; print(firmware_configs.ROOT)", cwd=outside)
    assert where.returncode == 0, where.stderr
    root = Path(where.stdout.strip())
    assert root.is_relative_to(edge_venv.root)
    shipped = sorted(p.relative_to(root) for p in root.rglob("*.toml"))
    in_repo = sorted(p.relative_to(REPO / "firmware_configs")
                     for p in (REPO / "firmware_configs").rglob("*.toml"))
    assert shipped == in_repo
    check = edge_venv.run(edge_venv.fiberwatch, "config", "check", root, cwd=outside)
    assert check.returncode == 0, check.stderr
