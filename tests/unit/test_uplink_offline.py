"""Uplink without a broker, and the shared client factory (`edge_agent.mqtt_client`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config import BrokerConfig, GatewayConfig
from edge_agent.events import Event, event_id
from edge_agent.mqtt_client import MqttConfigError, broker_password, make_client
from edge_agent.store_forward import Outbox
from edge_agent.summary import FeatureSummary
from edge_agent.uplink import Uplink
from fiberwatch.services import free_port


def gw_cfg(tmp_path: Path, port: int) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "gateway": {"site": "s1", "id": "g1", "data_dir": str(tmp_path)},
        "broker": {"port": port},
        "model": {"allow_unsigned": True},
        "streams": [{"kind": "dts", "channels": 8, "sample_rate_hz": 1, "window_s": 10,
                     "hop_s": 5}],
    })


def event(i: int, gateway: str = "g1") -> Event:
    return Event(id=event_id("s1", gateway, "dts", i, 0), site="s1", gateway=gateway,
                 stream="dts", start_ns=i, end_ns=i, ch_start=0, ch_end=0, dist_start_m=0.0,
                 dist_end_m=0.0, peak_score=1.0, mean_score=1.0, threshold=0.5,
                 severity="low", class_hint="unknown", n_windows=1, model_version="m",
                 model_hash="h", detected_ns=i)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "o.db", max_events=100, max_age_s=3600) as ob:
        yield ob


def test_summaries_never_block_and_drops_are_counted(tmp_path: Path, outbox: Outbox) -> None:
    up = Uplink(gw_cfg(tmp_path, free_port()), outbox, summary_queue=8)  # never started
    s = FeatureSummary(site="s1", gateway="g1", stream="dts", t_ns=1, ch_start=0,
                       group_size=8, score=[1.0], energy=[1.0], threshold=[2.0],
                       model_version="m")
    for _ in range(100):
        up.send_summary(s)
    assert up.stats["dropped_summaries"] == 92


def test_events_wait_in_the_outbox_while_no_broker_answers(
    tmp_path: Path, outbox: Outbox
) -> None:
    up = Uplink(gw_cfg(tmp_path, free_port()), outbox, reconnect_delay_s=(0.05, 0.2))
    up.start()
    try:
        up.send_event(event(1))
        up.send_events([event(2), event(3)])
        assert outbox.depth() == 3  # committed before send_* returned
        assert not up.flush(timeout=0.2)
        st = up.stats
    finally:
        up.stop()
    assert st["connected"] is False and st["acked"] == 0 and st["outbox_depth"] == 3
    assert [Event.from_json(p).id for _, _, p in outbox.pending()] == [
        event(i).id for i in (1, 2, 3)]
    with pytest.raises(RuntimeError, match="starts once"):
        up.start()


def test_an_event_of_another_gateway_is_refused(tmp_path: Path, outbox: Outbox) -> None:
    up = Uplink(gw_cfg(tmp_path, free_port()), outbox)
    with pytest.raises(ValueError, match="g2"):
        up.send_event(event(1, gateway="g2"))
    assert outbox.depth() == 0
    stamped = dataclasses.replace(event(1), model_version="m-2")
    up.send_event(stamped)
    assert outbox.depth() == 1


def test_password_comes_from_the_named_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = BrokerConfig(username="gw", password_env="FW_TEST_MQTT_PW")
    monkeypatch.delenv("FW_TEST_MQTT_PW", raising=False)
    with pytest.raises(MqttConfigError, match="FW_TEST_MQTT_PW is not set"):
        make_client(broker, "c1")
    monkeypatch.setenv("FW_TEST_MQTT_PW", "s3cret")
    assert broker_password(broker) == "s3cret"
    assert broker_password(BrokerConfig()) is None
    make_client(broker, "c1")


def test_tls_with_a_missing_ca_file_fails_at_construction(tmp_path: Path) -> None:
    broker = BrokerConfig(tls=True, ca_file=tmp_path / "missing.pem")
    with pytest.raises(MqttConfigError, match="missing.pem"):  # typed: the agent says why
        make_client(broker, "c1")
