"""The label publisher's systemd unit and its environment file: what they promise, systemd's
verdict, that `fiberwatch cloud labels` accepts its command line, and that this very command
line, run against a real TLS Mosquitto with the generated logins and ACL and a real influxd,
delivers a stored label to its gateway's login and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud import codec, schema
from cloud.influx import InfluxClient
from cloud.labels import parser
from cloud.store import Store
from edge_agent import topics
from edge_agent.events import Event, event_id
from edge_agent.labels import parse_label
from fiberwatch.bench._security_probe import connect
from fiberwatch.deploy.generate import Layout, write_single_broker
from fiberwatch.deploy.spec import SERVICE_UNITS, gateway_user, parse_spec
from fiberwatch.services import Influxd, Mosquitto
from tests.integration._polling import wait_for
from tests.integration._systemd import env_example, service_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy/systemd/fiberwatch-labels.service"
ENV_EXAMPLE = REPO / "deploy/fiberwatch-labels.env.example"
VENV_BIN = "/opt/fiberwatch/bin/fiberwatch"
CA = "/etc/fiberwatch/mqtt/ca.crt"
SPEC = parse_spec({"site": [{"name": "s1", "gateways": ["g1", "g2"]}]})
S = 10**9


def _service() -> dict[str, list[str]]:
    return service_settings(UNIT)


def _env_example() -> dict[str, str]:
    return env_example(ENV_EXAMPLE)


def _exec_start(env: dict[str, str]) -> list[str]:
    """ExecStart with systemd's ${VAR} substitution done: the unit's defaults, then `env`."""
    svc = _service()
    values = {**dict(e.split("=", 1) for e in svc["Environment"]), **env}
    line = svc["ExecStart"][0]
    for key, value in values.items():
        line = line.replace("${" + key + "}", value)
    assert "${" not in line, line
    return shlex.split(line)


def test_the_unit_runs_the_publisher_as_its_login() -> None:
    svc = _service()
    (start,) = svc["ExecStart"]
    assert start.startswith(f"{VENV_BIN} cloud labels ")
    assert "--once" not in start  # a service: it keeps publishing new labels
    assert "--mqtt-username labels" in start and f"--mqtt-ca {CA}" in start
    assert "--mqtt-password-file ${CREDENTIALS_DIRECTORY}/mqtt.password" in start
    assert svc["LoadCredential"] == ["mqtt.password:/etc/fiberwatch/mqtt/labels.password"]
    assert "-/etc/fiberwatch/labels.env" in svc["EnvironmentFile"]
    assert SERVICE_UNITS["labels"] == UNIT.name  # what `fiberwatch deploy creds` points to


def test_the_command_line_parses_with_the_defaults_and_the_example_env() -> None:
    creds = {"CREDENTIALS_DIRECTORY": "/run/credentials/fiberwatch-labels.service"}
    for env in (creds, {**creds, **_env_example()}):
        args = parser().parse_args(_exec_start(env)[3:])
        assert args.mqtt_username == "labels" and args.mqtt_ca == Path(CA)
        assert args.mqtt_password_file == Path(creds["CREDENTIALS_DIRECTORY"], "mqtt.password")
        assert args.mqtt_host and args.influx_url.startswith("http") and args.every > 0
        assert not args.once
        assert args.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR")


@pytest.mark.parametrize(("key", "value"), [
    ("DynamicUser", "yes"), ("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"),
    ("Restart", "on-failure"), ("RestartPreventExitStatus", "2"),
    ("CapabilityBoundingSet", ""), ("AmbientCapabilities", ""), ("PrivateTmp", "yes"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
])
def test_hardening(key: str, value: str) -> None:
    assert _service()[key] == [value]


def test_the_hardening_is_the_alerting_units() -> None:
    """Same sandbox as alerting's unit, less only what the publisher does not need (a state
    directory: its labels live in InfluxDB)."""
    alerting = REPO / "deploy/systemd/fiberwatch-alerting.service"
    text = UNIT.read_text()
    start = alerting.read_text().index("NoNewPrivileges=")
    sandbox = alerting.read_text()[start:].split("\n\n")[0].splitlines()
    assert [ln for ln in sandbox if ln not in text.splitlines()] == []
    assert "StateDirectory" not in text and "ReadWritePaths" not in text


def test_env_example_names_what_the_unit_reads() -> None:
    env = _env_example()
    used = {k for k in env if "${" + k + "}" in UNIT.read_text()}
    assert used == {"FIBERWATCH_INFLUX_URL", "FIBERWATCH_MQTT_HOST", "FIBERWATCH_MQTT_PORT",
                    "FIBERWATCH_LOG_LEVEL", "FIBERWATCH_LABELS_EVERY_S"}
    assert set(env) == used | {"FIBERWATCH_INFLUX_PASSWORD"}  # read by the program itself


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze, fiberwatch = shutil.which("systemd-analyze"), shutil.which("fiberwatch")
    if analyze is None or fiberwatch is None:
        pytest.skip("systemd-analyze or a fiberwatch script is missing")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(VENV_BIN, fiberwatch))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == ""


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[tuple[Mosquitto, Layout]]:
    lay = Layout(tmp_path / "deploy")
    single = write_single_broker(SPEC, lay, server_names=("127.0.0.1",))
    with Mosquitto(tmp_path / "mosquitto", secure_dir=single) as broker:
        yield broker, lay


def _stored_label(url: str, gateway: str) -> str:
    """An event of `gateway` and an operator's false-alarm label of it, in InfluxDB."""
    client = InfluxClient(url)
    try:
        schema.ensure_schema(client)
        start = 1_700_000_000 * S
        eid = event_id("s1", gateway, "das", start, 40)
        ev = Event(id=eid, site="s1", gateway=gateway, stream="das", start_ns=start,
                   end_ns=start + 10 * S, ch_start=40, ch_end=47, dist_start_m=40.0,
                   dist_end_m=47.0, peak_score=3.0, mean_score=2.0, threshold=1.0,
                   severity="low", class_hint="unknown", n_windows=4, model_version="m-1",
                   model_hash="h", detected_ns=start + 10 * S)
        client.write(schema.DB, [codec.event_line(ev, ev.detected_ns + 1)], rp=schema.RP_EVENTS)
        Store(client).add_label(eid, label="false_alarm", note="valve", user="op")
    finally:
        client.close()
    return eid


def test_the_units_command_publishes_a_stored_label_to_its_gateway(
        secure: tuple[Mosquitto, Layout], influxd: Influxd, tmp_path: Path) -> None:
    broker, lay = secure
    eid = _stored_label(influxd.url, "g1")
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt.password").write_text(lay.password("labels") + "\n")
    argv = _exec_start({"CREDENTIALS_DIRECTORY": str(creds), "FIBERWATCH_INFLUX_URL": influxd.url,
                        "FIBERWATCH_MQTT_PORT": str(broker.port)})
    argv = [sys.executable, "-m", "fiberwatch", *argv[1:]]
    argv[argv.index(CA)] = str(lay.ca.cert)
    gw = connect(broker.port, lay.ca.cert, gateway_user("s1", "g1"),
                 lay.password(gateway_user("s1", "g1")))
    other = connect(broker.port, lay.ca.cert, gateway_user("s1", "g2"),
                    lay.password(gateway_user("s1", "g2")))
    assert gw.connected and other.connected
    gw.client.subscribe(topics.labels("s1", "g1"), 1)
    other.client.subscribe(topics.labels("s1", "g2"), 1)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FIBERWATCH_MQTT_PASSWORD", None)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(lambda: gw.received, 60, "the label at its gateway's login",
                 failed=lambda: None if proc.poll() is None else f"exited {proc.returncode}")
        (topic, payload), = gw.received
        label = parse_label(payload, site="s1", gateway="g1")
        assert topic == topics.label("s1", "g1", label.key)
        assert (label.event_id, label.label, label.ch_start, label.ch_end) == \
            (eid, "false_alarm", 40, 47)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        gw.close()
        other.close()
    assert proc.returncode == 0, err
    assert "event=labels_publisher_started" in err and "connected=True" in err
    assert "event=labels_published count=1" in err
    assert not other.received  # the other gateway's login never sees it
