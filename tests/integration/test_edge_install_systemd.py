"""The gateway's systemd unit and environment file: what they promise, and systemd's verdict."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration._systemd import service_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy/systemd/fiberwatch-edge@.service"
ENV_EXAMPLE = REPO / "deploy/fiberwatch-edge.env.example"
VENV_BIN = "/opt/fiberwatch/bin/fiberwatch"


def _service() -> dict[str, list[str]]:
    return service_settings(UNIT)


def test_one_instance_per_gateway_config() -> None:
    service = _service()
    assert service["ExecStart"] == [
        f"{VENV_BIN} $FIBERWATCH_VERBOSITY edge run --config /etc/fiberwatch/%i.toml"
    ]
    assert service["ExecStartPre"] == [f"{VENV_BIN} config check /etc/fiberwatch/%i.toml"]
    assert "-/etc/fiberwatch/%i.env" in service["EnvironmentFile"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DynamicUser", "yes"),
        ("StateDirectory", "fiberwatch-edge/%i"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("Restart", "on-failure"),
        ("MemoryMax", "2G"),
        ("CapabilityBoundingSet", ""),
    ],
)
def test_hardening(key: str, value: str) -> None:
    assert _service()[key] == [value]


def test_env_example_is_key_value_lines() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    lines = [ln for ln in ENV_EXAMPLE.read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    parser.read_string("[env]\n" + "\n".join(lines))
    assert set(parser["env"]) == {"FIBERWATCH_VERBOSITY", "FIBERWATCH_MQTT_PASSWORD"}


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    fiberwatch = shutil.which("fiberwatch")
    if fiberwatch is None:
        pytest.skip("no fiberwatch script on PATH to stand in for the venv's")
    # verify checks that the commands exist: point them at this machine's fiberwatch
    unit = tmp_path / "fiberwatch-edge@well-a.service"
    unit.write_text(UNIT.read_text().replace(VENV_BIN, fiberwatch))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == ""


def test_fl_node_unit_needs_tls_and_its_auth_key(tmp_path: Path) -> None:
    """The federated-training node's unit: TLS and SuperNode authentication, never --insecure;
    systemd accepts it."""
    text = (REPO / "deploy/systemd/fiberwatch-fl-node@.service").read_text()
    exec_start = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    assert "--insecure" not in text and "--auth-key ${CREDENTIALS_DIRECTORY}/" in exec_start
    assert "LoadCredential=supernode.key:" in text
    analyze, fiberwatch = shutil.which("systemd-analyze"), shutil.which("fiberwatch")
    if analyze is None or fiberwatch is None:
        pytest.skip("systemd-analyze or a fiberwatch script is missing")
    unit = tmp_path / "fiberwatch-fl-node@well-a.service"
    unit.write_text(text.replace(VENV_BIN, fiberwatch))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
