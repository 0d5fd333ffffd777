"""The shared MQTT helper: config from env and flags, templates, password files."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edge_agent.config import BrokerConfig
from edge_agent.mqtt_args import add_broker_args
from edge_agent.mqtt_client import (
    MqttConfigError,
    broker_from_args,
    broker_from_env,
    broker_password,
    describe,
    for_gateway,
)


def test_env_gives_login_and_tls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FIBERWATCH_MQTT_USERNAME", "ingest")
    monkeypatch.setenv("FIBERWATCH_MQTT_CA", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("FIBERWATCH_MQTT_PASSWORD", "pw")
    b = broker_from_env(port=8883)
    assert (b.username, b.tls, b.port, b.password_env) == (
        "ingest", True, 8883, "FIBERWATCH_MQTT_PASSWORD")
    assert broker_password(b) == "pw" and describe(b) == "tls+password"


def test_flags_win_and_a_password_file_is_read(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("FIBERWATCH_MQTT_USERNAME", "from-env")
    (tmp_path / "pw").write_text("s3cret\n")
    p = argparse.ArgumentParser()
    add_broker_args(p)
    args = p.parse_args(["--mqtt-username", "rollout", "--mqtt-password-file",
                         str(tmp_path / "pw")])
    b = broker_from_args(args, "127.0.0.1", 1883)
    assert b.username == "rollout" and b.password_env is None and not b.tls
    assert broker_password(b) == "s3cret"


def test_bad_settings_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(MqttConfigError, match="port"):
        broker_from_env(port=0)
    with pytest.raises(MqttConfigError, match="cannot read"):
        broker_password(BrokerConfig(username="u", password_file=tmp_path / "missing"))
    with pytest.raises(ValueError, match="not both"):
        BrokerConfig(password_env="X", password_file=tmp_path / "pw")
    with pytest.raises(ValueError, match="go together"):
        BrokerConfig(cert_file=tmp_path / "c.crt")


def test_templates_give_each_gateway_its_login() -> None:
    b = BrokerConfig(username="{site}.{gateway}.interrogator",
                     password_file=Path("/s/{site}.{gateway}.interrogator/password"))
    g = for_gateway(b, "demo", "well-a")
    assert g.username == "demo.well-a.interrogator"
    assert g.password_file == Path("/s/demo.well-a.interrogator/password")
