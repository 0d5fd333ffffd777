"""The generated ACL on real Mosquitto (TLS, logins): the alerting login reads gateways'
events and publishes alerts, and nothing else; the read-only viewer receives the alerts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge_agent import topics
from fiberwatch.bench._security_probe import Probe, connect
from fiberwatch.deploy.generate import Layout, write_single_broker
from fiberwatch.deploy.spec import gateway_user, parse_spec
from fiberwatch.services import Mosquitto
from tests.integration._polling import wait_for

pytestmark = pytest.mark.integration

SPEC = parse_spec({"site": [{"name": "s1", "gateways": ["g1"]}]})
ALERTS = "fiberwatch/v1/alerts"
OK = ("Success", "No matching subscribers")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mosquitto, Layout]]:
    out = tmp_path_factory.mktemp("deploy")
    lay = Layout(out)
    secure = write_single_broker(SPEC, lay, server_names=("127.0.0.1",))
    with Mosquitto(tmp_path_factory.mktemp("mosquitto"), secure_dir=secure) as b:
        yield b, lay


def _login(broker: tuple[Mosquitto, Layout], user: str) -> Probe:
    b, lay = broker
    p = connect(b.port, lay.ca.cert, user, lay.password(user))
    assert p.connected, f"{user}: {p.reason}"
    return p


def _subscribe(p: Probe, *filters: str) -> None:
    """Subscribe at QoS1 and wait for the broker's SUBACK."""
    acked: list[int] = []
    p.client.on_subscribe = lambda _c, _u, mid, _rc, _p: acked.append(mid)
    _, mid = p.client.subscribe([(f, 1) for f in filters])
    wait_for(lambda: mid in acked, 10, f"the SUBACK for {filters}")


def test_alerting_reads_events_and_publishes_only_alerts(
        broker: tuple[Mosquitto, Layout]) -> None:
    alerting = _login(broker, "alerting")
    viewer = _login(broker, "viewer")
    gw = _login(broker, gateway_user("s1", "g1"))
    try:
        _subscribe(alerting, topics.events("s1", "g1"), topics.health("s1", "g1"))
        _subscribe(viewer, f"{ALERTS}/#")
        assert gw.publish(topics.health("s1", "g1"), b"{}") in OK
        assert gw.publish(topics.events("s1", "g1"), b'{"id": "e1"}') in OK
        wait_for(lambda: alerting.received, 10, "the event at alerting")
        assert [t for t, _ in alerting.received] == [topics.events("s1", "g1")]  # no health

        assert alerting.publish(ALERTS, b'{"alerts": []}') in OK
        assert alerting.publish(f"{ALERTS}/s1", b'{"alerts": []}') in OK
        wait_for(lambda: len(viewer.received) >= 2, 10, "both alerts at the viewer")
        assert sorted(t for t, _ in viewer.received) == [ALERTS, f"{ALERTS}/s1"]
        for denied in (topics.events("s1", "g1"), topics.model("s1", "g1"),
                       topics.health("s1", "g1"), "fiberwatch/v1/other"):
            assert alerting.publish(denied, b"x") == "Not authorized", denied
        assert viewer.publish(ALERTS, b"x") == "Not authorized"
        assert gw.publish(ALERTS, b"x") == "Not authorized"
    finally:
        for p in (alerting, viewer, gw):
            p.close()


def test_the_alerting_login_needs_its_password(broker: tuple[Mosquitto, Layout]) -> None:
    b, lay = broker
    p = connect(b.port, lay.ca.cert, "alerting", "not-its-password")
    try:
        assert not p.connected
    finally:
        p.close()


def test_a_publish_the_acl_refuses_is_not_counted_as_delivered(
        broker: tuple[Mosquitto, Layout]) -> None:
    """MQTT v5 acknowledges a refused publish with a failure reason: the alert stays queued
    (a receiver topic outside fiberwatch/v1/alerts/# is a config error the queue shows)."""
    from cloud.alerting.delivery import DeliveryError, MqttSender
    from edge_agent.config import BrokerConfig
    from edge_agent.mqtt_client import make_client
    from firmware_configs.alerting import Receiver

    b, lay = broker
    client = make_client(BrokerConfig(port=b.port, tls=True, ca_file=lay.ca.cert,
                                      username="alerting",
                                      password_file=lay.client_dir("alerting") / "password"),
                         "alerting")
    client.reconnect()
    client.loop_start()
    try:
        wait_for(client.is_connected, 10, "the alerting login")
        ok = MqttSender(Receiver(name="bus", type="mqtt", topic=f"{ALERTS}/s1"), client)
        wrong = MqttSender(Receiver(name="bad", type="mqtt", topic="fiberwatch/v1/alarms"),
                           client)
        ok.send({"alerts": []})
        with pytest.raises(DeliveryError, match="refused"):
            wrong.send({"alerts": []})
        ok.send({"alerts": []})  # one client, both senders: each reads its own PUBACK
    finally:
        client.loop_stop()
        client.disconnect()
