"""Uplink against a real Mosquitto: delivery, broker outage, agent SIGKILL, last will."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge_agent import topics
from edge_agent.config import BrokerConfig, GatewayConfig
from edge_agent.events import Event, event_id
from edge_agent.mqtt_client import make_client
from edge_agent.store_forward import Outbox
from edge_agent.summary import HEALTH_KEYS, PACKED_MAGIC, FeatureSummary
from edge_agent.uplink import Uplink
from fiberwatch.services import Mosquitto

pytestmark = pytest.mark.integration

SITE, GW = "s1", "g1"
FAST = (0.05, 0.5)  # reconnect backoff for tests


def gw_cfg(tmp_path: Path, port: int) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "gateway": {"site": SITE, "id": GW, "data_dir": str(tmp_path)},
        "broker": {"port": port, "keepalive_s": 5},
        "model": {"allow_unsigned": True},
        "streams": [{"kind": "dts", "channels": 8, "sample_rate_hz": 1, "window_s": 10,
                     "hop_s": 5}],
    })


def make_event(i: int) -> Event:
    return Event(id=event_id(SITE, GW, "dts", i, 0), site=SITE, gateway=GW, stream="dts",
                 start_ns=i, end_ns=i + 1, ch_start=0, ch_end=3, dist_start_m=0.0,
                 dist_end_m=3.0, peak_score=5.0, mean_score=3.0, threshold=2.0,
                 severity="high", class_hint="leak", n_windows=1, model_version="m-1",
                 model_hash="h", detected_ns=i)


class Sub:
    """A QoS1 test subscriber that records payloads and lets tests wait on a predicate."""

    def __init__(self, port: int, topic: str, *, client_id: str, persistent: bool = False) -> None:
        self.topic = topic
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = make_client(BrokerConfig(port=port), client_id, protocol="v311",
                                  clean=not persistent, reconnect_delay_s=FAST)
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.loop_start()
        assert self._subscribed.wait(20), "subscriber did not get its SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[mqtt.MQTTMessage]], bool], timeout: float = 30) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(self.messages), timeout)

    def ids(self) -> set[str]:
        with self._cond:
            return {json.loads(m.payload)["id"] for m in self.messages}

    def docs(self) -> list[dict]:
        with self._cond:
            return [json.loads(m.payload) for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def sub_factory() -> Iterator[Callable[..., Sub]]:
    subs: list[Sub] = []

    def make(*args: Any, **kw: Any) -> Sub:
        subs.append(Sub(*args, **kw))
        return subs[-1]

    yield make
    for s in subs:
        s.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db", max_events=10_000, max_age_s=86400) as ob:
        yield ob


def has_ids(expected: set[str]) -> Callable[[list[mqtt.MQTTMessage]], bool]:
    return lambda msgs: expected <= {json.loads(m.payload)["id"] for m in msgs}


def test_events_arrive_once_or_more_and_leave_the_outbox(
    tmp_path: Path, mosquitto: Mosquitto, outbox: Outbox, sub_factory: Callable[..., Sub]
) -> None:
    sub = sub_factory(mosquitto.port, topics.ALL_EVENTS, client_id="t-events")
    up = Uplink(gw_cfg(tmp_path, mosquitto.port), outbox, window=20, reconnect_delay_s=FAST)
    up.start()
    try:
        events = [make_event(i) for i in range(300)]
        for e in events[:100]:
            up.send_event(e)
        up.send_events(events[100:])
        assert sub.wait_for(has_ids({e.id for e in events}))
        assert up.flush(30)
        st = up.stats
    finally:
        up.stop()
    assert st["acked"] == 300 and st["outbox_depth"] == 0 and st["inflight"] == 0
    assert st["connected"] is True and st["redelivered"] == 0
    assert Event.from_json(sub.messages[0].payload) in events


def test_events_sent_during_a_broker_outage_arrive_after_it(
    tmp_path: Path, mosquitto: Mosquitto, outbox: Outbox, sub_factory: Callable[..., Sub]
) -> None:
    # a persistent session, so the broker queues for the subscriber across the restart
    sub = sub_factory(mosquitto.port, topics.ALL_EVENTS, client_id="t-outage", persistent=True)
    up = Uplink(gw_cfg(tmp_path, mosquitto.port), outbox, window=8, reconnect_delay_s=FAST)
    up.start()
    try:
        before = [make_event(i) for i in range(10)]
        up.send_events(before)
        assert up.flush(30)
        mosquitto.stop()
        during = [make_event(i) for i in range(10, 50)]
        for e in during:
            up.send_event(e)  # nothing acknowledges these while the broker is down
        assert outbox.depth() == 40
        mosquitto.start()  # same port, same persistence dir
        assert sub.wait_for(has_ids({e.id for e in before + during}))
        assert up.flush(30)
    finally:
        up.stop()
    assert outbox.depth() == 0


_AGENT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from edge_agent.config import GatewayConfig
    from edge_agent.store_forward import Outbox
    from edge_agent.uplink import Uplink
    sys.path.insert(0, sys.argv[3])
    from test_uplink import make_event
    cfg = GatewayConfig.model_validate_json(sys.argv[1])
    mode = sys.argv[2]
    ob = Outbox(cfg.gateway.data_dir / "outbox.db", max_events=10_000, max_age_s=86400)
    up = Uplink(cfg, ob, reconnect_delay_s=(0.05, 0.5))
    up.start()
    if mode == "send":  # broker down: queue events, report, then wait to be killed
        up.send_events([make_event(i) for i in range(25)])
        print("queued", ob.depth(), flush=True)
    elif mode == "health":  # connect, publish health, report, wait to be killed
        assert up.wait_connected(20)
        up.send_health({"status": "ok", "site": "s1", "gateway": "g1", "outbox_depth": 7})
        print("up", flush=True)
    else:  # fresh process: deliver what the dead one left, then stop cleanly
        ok = up.wait_connected(20) and up.flush(30)
        print(json.dumps({"ok": ok, **up.stats}), flush=True)
        up.stop()
        ob.close()
        sys.exit(0)
    sys.stdin.read()
""")


def _agent(cfg: GatewayConfig, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _AGENT, cfg.model_dump_json(), mode, str(Path(__file__).parent)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()  # SIGKILL, this PID only
    proc.wait(30)


@pytest.mark.slow
def test_events_of_a_sigkilled_agent_are_delivered_by_the_next_process(
    tmp_path: Path, sub_factory: Callable[..., Sub]
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")  # not running yet
    cfg = gw_cfg(tmp_path, broker.port)
    first = _agent(cfg, "send")
    try:
        line = first.stdout.readline()  # type: ignore[union-attr]
        assert line.split() == ["queued", "25"], line
    finally:
        _kill(first)
    with broker:
        sub = sub_factory(broker.port, topics.ALL_EVENTS, client_id="t-sigkill")
        second = _agent(cfg, "drain")
        try:
            out, _ = second.communicate(timeout=90)
        finally:
            if second.poll() is None:
                _kill(second)
        stats = json.loads(out)
        assert second.returncode == 0 and stats["ok"], out
        assert stats["redelivered"] == 25 and stats["outbox_depth"] == 0
        assert sub.wait_for(has_ids({make_event(i).id for i in range(25)}))


@pytest.mark.slow
def test_last_will_marks_a_killed_agent_offline(
    tmp_path: Path, mosquitto: Mosquitto, sub_factory: Callable[..., Sub]
) -> None:
    health = topics.health(SITE, GW)
    sub = sub_factory(mosquitto.port, health, client_id="t-will")
    agent = _agent(gw_cfg(tmp_path, mosquitto.port), "health")
    try:
        assert agent.stdout.readline().strip() == "up"  # type: ignore[union-attr]
        assert sub.wait_for(lambda m: any(d["status"] == "ok" for d in _docs(m)))
    finally:
        _kill(agent)
    assert sub.wait_for(lambda m: _docs(m)[-1]["status"] == "offline")
    late = sub_factory(mosquitto.port, health, client_id="t-will-late")  # retained
    assert late.wait_for(lambda m: len(m) == 1)
    offline = late.docs()[0]
    assert late.messages[0].retain and offline["status"] == "offline"
    assert set(HEALTH_KEYS) <= set(offline) and offline["gateway"] == GW
    assert offline["outbox_depth"] == 0  # the will is fixed at CONNECT: before that health


def _docs(msgs: list[mqtt.MQTTMessage]) -> list[dict]:
    return [json.loads(m.payload) for m in msgs]


def test_retained_model_summaries_state_and_clean_stop(
    tmp_path: Path, mosquitto: Mosquitto, outbox: Outbox, sub_factory: Callable[..., Sub]
) -> None:
    pub = make_client(BrokerConfig(port=mosquitto.port), "t-model-pub", protocol="v311")
    connected = threading.Event()
    pub.on_connect = lambda *a: connected.set()
    pub.loop_start()
    assert connected.wait(20)
    info = pub.publish(topics.model(SITE, GW), b"PACKAGE-BYTES", qos=1, retain=True)
    info.wait_for_publish(20)
    assert info.is_published()
    pub.disconnect()
    pub.loop_stop()
    sub = sub_factory(mosquitto.port, f"{topics.base(SITE, GW)}/#", client_id="t-all")
    packages: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    up = Uplink(gw_cfg(tmp_path, mosquitto.port), outbox, on_model_package=packages.put,
                reconnect_delay_s=FAST)
    up.start()
    try:
        assert packages.get(timeout=20) == b"PACKAGE-BYTES"  # subscribed in on_connect
        summary = FeatureSummary(site=SITE, gateway=GW, stream="dts", t_ns=1, ch_start=0,
                                 group_size=8, score=[1.0], energy=[20.0], threshold=[3.0],
                                 model_version="m-1")
        up.send_summary(summary)
        up.send_model_state({"model_version": "m-1", "last_result": None})
        up.send_health({"status": "ok", "model_version": "m-1"})
        assert sub.wait_for(lambda m: {x.topic.rsplit("/", 1)[-1] for x in m}
                            >= {"dts", "model_state", "health"})
    finally:
        up.stop()
    assert sub.wait_for(lambda m: json.loads(m[-1].payload).get("status") == "offline")
    offline = json.loads(sub.messages[-1].payload)  # stop() sends it from the last health
    assert set(HEALTH_KEYS) <= set(offline) and offline["model_version"] == "m-1"
    got = {m.topic: m.payload for m in sub.messages}
    packed = got[topics.features(SITE, GW, "dts")]
    assert packed[:4] == PACKED_MAGIC  # the default summary format
    assert FeatureSummary.decode(packed) == summary
    assert json.loads(got[topics.model_state(SITE, GW)])["model_version"] == "m-1"
    assert up.stats["summaries_sent"] == 1 and up.stats["model_packages"] == 1


class _Seen(logging.Handler):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle, self.hit = needle, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.hit.set()


def test_a_publish_the_broker_refuses_stays_in_the_outbox(tmp_path: Path, outbox: Outbox) -> None:
    """MQTT v5: Mosquitto answers a denied publish with PUBACK "Not authorized"."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite fiberwatch/v1/+/+/health\n"
                   "topic readwrite fiberwatch/v1/+/+/model\n")
    seen = _Seen("uplink event refused")
    logging.getLogger("edge_agent.uplink").addHandler(seen)
    try:
        with Mosquitto(tmp_path / "m", extra_conf=f"acl_file {acl}\n") as broker:
            up = Uplink(gw_cfg(tmp_path, broker.port), outbox, reconnect_delay_s=FAST)
            up.start()
            try:
                up.send_event(make_event(1))
                assert seen.hit.wait(30)
                st = up.stats
            finally:
                up.stop()
    finally:
        logging.getLogger("edge_agent.uplink").removeHandler(seen)
    assert st["rejected"] == 1 and st["acked"] == 0
    assert outbox.depth() == 1


class FlakyLink:
    """A loopback TCP proxy to the broker that can swallow the broker's replies and cut."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.blackhole = threading.Event()  # set: broker -> client bytes are dropped
        self._lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self._lsock.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._lsock.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            self._socks += [client, upstream]
            for src, dst, drop in ((client, upstream, None), (upstream, client, self.blackhole)):
                t = threading.Thread(target=self._pump, args=(src, dst, drop))
                self._threads.append(t)
                t.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, drop: threading.Event | None) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    return
                if drop is None or not drop.is_set():
                    dst.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        """Drop every proxied connection (both ends), as a failing link would."""
        socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._lsock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self._lsock.close()
        self.cut()
        for t in self._threads:
            t.join(10)


def test_in_flight_events_are_resent_after_the_link_drops(
    tmp_path: Path, mosquitto: Mosquitto, outbox: Outbox, sub_factory: Callable[..., Sub]
) -> None:
    """Published, reached the broker, PUBACK lost, link cut: paho resends, outbox drains."""
    sub = sub_factory(mosquitto.port, topics.ALL_EVENTS, client_id="t-flaky")
    link = FlakyLink(mosquitto.port)
    up = Uplink(gw_cfg(tmp_path, link.port), outbox, window=50, reconnect_delay_s=FAST)
    try:
        up.start()
        assert up.wait_connected(20)
        link.blackhole.set()
        events = [make_event(i) for i in range(30)]
        up.send_events(events)
        assert sub.wait_for(has_ids({e.id for e in events}))  # the broker has them all
        assert outbox.depth() == 30  # no PUBACK came back
        link.blackhole.clear()
        link.cut()
        assert up.flush(30)
        st = up.stats
        assert sub.wait_for(lambda m: len(m) >= 60)  # each one twice: at-least-once
    finally:
        up.stop()
        link.close()
    assert st["redelivered"] == 30 and st["acked"] == 30 and st["published"] == 30
    assert outbox.depth() == 0


def test_an_outbox_error_on_ack_means_a_resend_not_a_loss(
    tmp_path: Path, mosquitto: Mosquitto, outbox: Outbox, sub_factory: Callable[..., Sub],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sub = sub_factory(mosquitto.port, topics.ALL_EVENTS, client_id="t-ackfail")
    real, calls = outbox.ack_many, []

    def flaky(ids: Any) -> int:
        calls.append(list(ids))
        if len(calls) == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(calls[-1])

    monkeypatch.setattr(outbox, "ack_many", flaky)
    up = Uplink(gw_cfg(tmp_path, mosquitto.port), outbox, reconnect_delay_s=FAST)
    up.start()
    try:
        events = [make_event(i) for i in range(10)]
        up.send_events(events)
        assert up.flush(30)
    finally:
        up.stop()
    assert outbox.depth() == 0 and len(calls) >= 2
    assert sub.wait_for(has_ids({e.id for e in events}))
    assert set(calls[0]) <= {i for c in calls[1:] for i in c}  # the failed acks were redone
