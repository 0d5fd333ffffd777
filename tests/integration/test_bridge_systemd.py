"""The bridge's systemd unit: systemd's verdict, and the promises the deploy guide makes."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy/systemd/fiberwatch-bridge@.service"
VENV_BIN = "/opt/fiberwatch/bin/fiberwatch"


def _service() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        s = line.strip()
        if s.startswith("["):
            section = s
        elif section == "[Service]" and s and not s.startswith("#") and "=" in s:
            k, v = s.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_the_unit_runs_the_bridge_checked_hardened_and_restartable() -> None:
    svc = _service()
    assert svc["ExecStartPre"] == [f"{VENV_BIN} config check /etc/fiberwatch/bridge-%i.toml"]
    assert svc["ExecStart"] == [f"{VENV_BIN} $FIBERWATCH_VERBOSITY bridge run --config "
                                "/etc/fiberwatch/bridge-%i.toml"]
    assert svc["DynamicUser"] == ["yes"] and svc["ProtectSystem"] == ["strict"]
    assert svc["StateDirectory"] == ["fiberwatch-bridge/%i"]
    assert svc["Restart"] == ["on-failure"] and svc["RestartPreventExitStatus"] == ["2"]
    assert "ReadWritePaths" not in svc, "the interrogator's files stay read-only by default"
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(UNIT.read_text())
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    fiberwatch = shutil.which("fiberwatch")
    if analyze is None or fiberwatch is None:
        pytest.skip("systemd-analyze or a fiberwatch script is missing")
    unit = tmp_path / "fiberwatch-bridge@well-a.service"
    unit.write_text(UNIT.read_text().replace(VENV_BIN, fiberwatch))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == ""
