"""The alerting systemd unit and its environment file: what they promise, systemd's verdict,
and that the command line it runs is one `fiberwatch cloud alerting` accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from cloud.alerting.service import parser
from tests.integration._systemd import env_example, service_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy/systemd/fiberwatch-alerting.service"
ENV_EXAMPLE = REPO / "deploy/fiberwatch-alerting.env.example"
VENV_BIN = "/opt/fiberwatch/bin/fiberwatch"
CONFIG = "/etc/fiberwatch/alerts.toml"


def _service() -> dict[str, list[str]]:
    return service_settings(UNIT)


def _env_example() -> dict[str, str]:
    return env_example(ENV_EXAMPLE)


def test_the_unit_checks_the_config_then_runs_alerting_as_its_login() -> None:
    svc = _service()
    assert svc["ExecStartPre"] == [f"{VENV_BIN} config check {CONFIG}"]
    (start,) = svc["ExecStart"]
    assert start.startswith(f"{VENV_BIN} cloud alerting --config {CONFIG} ")
    assert "--mqtt-username alerting" in start and "--mqtt-ca " in start
    assert "--mqtt-password-file ${CREDENTIALS_DIRECTORY}/mqtt.password" in start
    assert svc["LoadCredential"] == ["mqtt.password:/etc/fiberwatch/mqtt/alerting.password"]
    assert "-/etc/fiberwatch/alerting.env" in svc["EnvironmentFile"]


def test_the_command_line_parses_with_the_defaults_and_the_example_env() -> None:
    """systemd's ${VAR} substitution, done here: every flag is one the command knows, and
    each variable the line uses has a default in the unit."""
    svc = _service()
    env = dict(e.split("=", 1) for e in svc["Environment"])
    env["CREDENTIALS_DIRECTORY"] = "/run/credentials/fiberwatch-alerting.service"
    for values in (env, {**env, **_env_example()}):
        line = svc["ExecStart"][0]
        for key, value in values.items():
            line = line.replace("${" + key + "}", value)
        assert "${" not in line, line
        args = parser().parse_args(shlex.split(line)[3:])
        assert args.config == Path(CONFIG) and args.mqtt_username == "alerting"
        assert args.mqtt_host and args.influx_url.startswith("http")
        assert args.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR")


@pytest.mark.parametrize(("key", "value"), [
    ("DynamicUser", "yes"), ("StateDirectory", "fiberwatch"), ("ProtectSystem", "strict"),
    ("NoNewPrivileges", "yes"), ("Restart", "on-failure"), ("RestartPreventExitStatus", "2"),
    ("CapabilityBoundingSet", ""),
])
def test_hardening(key: str, value: str) -> None:
    assert _service()[key] == [value]


def test_the_state_file_of_the_shipped_rules_is_in_the_state_directory() -> None:
    import tomllib

    shipped = tomllib.loads((REPO / "firmware_configs/alerts/alerts.toml").read_text())
    assert shipped["alerting"]["state_db"].startswith("/var/lib/fiberwatch/")


def test_env_example_names_what_the_unit_reads() -> None:
    env = _env_example()
    assert {"FIBERWATCH_INFLUX_URL", "FIBERWATCH_MQTT_HOST", "FIBERWATCH_MQTT_PORT",
            "FIBERWATCH_LOG_LEVEL", "FIBERWATCH_INFLUX_PASSWORD"} <= set(env)
    shipped = (REPO / "firmware_configs/alerts/alerts.toml").read_text()
    for name in (n for n in env if n.startswith("FIBERWATCH_ALERT_")):
        assert f'bearer_token_env = "{name}"' in shipped, name


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze, fiberwatch = shutil.which("systemd-analyze"), shutil.which("fiberwatch")
    if analyze is None or fiberwatch is None:
        pytest.skip("systemd-analyze or a fiberwatch script is missing")
    unit = tmp_path / "fiberwatch-alerting.service"
    unit.write_text(UNIT.read_text().replace(VENV_BIN, fiberwatch))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == ""
