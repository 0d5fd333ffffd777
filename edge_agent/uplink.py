"""Uplink: the gateway's publisher to the cloud broker (events, summaries, health, model state).

Events are at-least-once: `Uplink.send_event` commits the event to the `Outbox` first and
only then wakes the sender thread, which publishes outbox rows at QoS1 with at most
``window`` in flight and deletes a row only after a successful PUBACK. After a broker outage
paho resends what was in flight and the sender continues from the outbox; after a process
death a new `Uplink` on the same outbox publishes every row left in it. The cloud dedupes by
event id.

One thread publishes (the sender); paho's network thread only enqueues notifications, so no
lock is held across ``publish()`` and no disk I/O happens in a callback. Summaries (QoS0) go
through a small bounded queue (oldest dropped, counted); health and model state (QoS1,
retained) are "latest wins" slots, republished after every reconnect.

Offline: the broker publishes the last will (retained health with status "offline" and every
`HEALTH_KEYS` key) if the connection dies without a DISCONNECT. MQTT fixes the will at CONNECT,
so its other values are those of the last health sent before the current connection (zeros
before the first); `Uplink.stop` publishes the same message from the latest health itself.
Stop the uplink before closing the outbox; an `Uplink` starts once.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent import topics
from edge_agent.config import GatewayConfig
from edge_agent.events import Event
from edge_agent.mqtt_client import Protocol, Will, make_client
from edge_agent.store_forward import Outbox
from edge_agent.summary import HEALTH_KEYS, FeatureSummary

log = logging.getLogger(__name__)

_SENT = (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)  # NO_CONN: paho queued it for reconnect
_SUMMARY_INFLIGHT = 16


class _Retained:
    """Latest-wins slot for one retained topic."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.latest: bytes | None = None  # waiting to be published
        self.last: bytes | None = None  # last published, resent after a reconnect
        self.mid: int | None = None  # in flight


def offline_health(site: str, gateway: str, last: dict[str, Any] | None) -> bytes:
    """The "offline" health message: every `HEALTH_KEYS` key, from the last health if any."""
    doc: dict[str, Any] = {k: 0 for k in HEALTH_KEYS}
    doc.update(drops={}, latency_ms={"p50": 0.0, "p99": 0.0}, model_version="none",
               model_hash="none")
    doc.update(last or {})
    doc.update(schema=1, site=site, gateway=gateway, status="offline", t_ns=time.time_ns())
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


class Uplink:
    """Publish the gateway's outputs to the broker through its own paho client.

    Parameters
    ----------
    cfg : GatewayConfig
        Broker settings and the gateway identity (topics).
    outbox : Outbox
        Durable store of events; owned by the caller (not closed by `stop`).
    on_model_package : callable, optional
        Called on paho's network thread with the bytes of the retained model package; must
        be cheap (hand it to a worker).
    window : int
        Most events in flight (published, not yet acknowledged) at once.
    summary_queue : int
        Summaries waiting to be sent; beyond it the oldest is dropped.
    protocol : {"v5", "v311"}
        v5 (default) reports refused publishes in the PUBACK; see `edge_agent.mqtt_client`.
    reconnect_delay_s : (float, float)
        Bounds of the exponential reconnect backoff.
    rejected_retry_s : float
        After the broker refuses an event (v5 PUBACK failure), retry it after this long.
    """

    def __init__(
        self, cfg: GatewayConfig, outbox: Outbox, *,
        on_model_package: Callable[[bytes], None] | None = None, window: int = 100,
        summary_queue: int = 64, protocol: Protocol = "v5",
        reconnect_delay_s: tuple[float, float] = (0.5, 30.0), rejected_retry_s: float = 30.0,
    ) -> None:
        site, gw = cfg.gateway.site, cfg.gateway.id
        self._site, self._gw = site, gw
        self._outbox = outbox
        self._on_model_package = on_model_package
        self._window = window
        self._rejected_retry_s = rejected_retry_s
        self._events_topic = topics.events(site, gw)
        self._model_topic = topics.model(site, gw)
        self._health_topic = topics.health(site, gw)
        self._offline = offline_health(site, gw, None)
        self._client = make_client(
            cfg.broker, f"fw-{site}-{gw}-uplink", protocol=protocol,
            will=Will(self._health_topic, self._offline),
            reconnect_delay_s=reconnect_delay_s, max_inflight=window + 8,
        )
        self._client.suppress_exceptions = True  # a raising callback must not kill reconnects
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._notes: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._summaries: deque[tuple[str, bytes]] = deque(maxlen=summary_queue)
        self._retained = {"health": _Retained(topics.health(site, gw)),
                          "model_state": _Retained(topics.model_state(site, gw))}
        self._thread: threading.Thread | None = None
        # sender-thread state
        self._up = False
        self._cursor = 0
        self._rescan_at: float | None = None
        self._recovered_max = 0
        self._inflight: dict[int, int] = {}  # outbox id -> mid
        self._by_mid: dict[int, tuple[str, int]] = {}  # mid -> (kind, outbox id)
        self._summary_outstanding = 0
        self._n = dict.fromkeys(("published", "acked", "redelivered", "rejected",
                                 "summaries_sent", "dropped_summaries", "model_packages"), 0)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start paho's network loop (connects, reconnects with backoff) and the sender."""
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError("an Uplink starts once; make a new one")
        self._recovered_max = self._outbox.max_id()
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="uplink-sender")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the sender, publish the "offline" health, disconnect and join paho's loop.

        Unacknowledged events stay in the outbox for the next start.
        """
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._connected.is_set():
            info = self._client.publish(self._health_topic, self._offline, 1, True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                info.wait_for_publish(min(timeout, 2.0))
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._thread = None
        log.info("uplink stopped stats=%s", self.stats)

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until connected to the broker (or ``timeout``); return whether connected."""
        return self._connected.wait(timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until the outbox is empty, no event is in flight and the latest health and
        model state are acknowledged (summaries are not waited for); return whether so."""
        def done() -> bool:
            return not self._inflight and self._outbox.depth() == 0 and all(
                r.latest is None and r.mid is None for r in self._retained.values())

        with self._idle:
            return self._idle.wait_for(done, timeout)

    # -- what the pipeline calls -----------------------------------------------------------
    def send_event(self, event: Event) -> None:
        """Commit ``event`` to the outbox (fsynced), then let the sender publish it at QoS1."""
        self.send_events([event])

    def send_events(self, events: list[Event]) -> None:
        """Like `send_event` for several events with one outbox commit (one fsync)."""
        for e in events:
            if (e.site, e.gateway) != (self._site, self._gw):
                raise ValueError(f"event for {e.site}/{e.gateway} on uplink of "
                                 f"{self._site}/{self._gw}")
        self._outbox.put_many([(self._events_topic, e.to_json()) for e in events])
        self._wake.set()

    def send_summary(self, s: FeatureSummary) -> None:
        """Queue a summary for QoS0 publishing; never blocks (drops the oldest when full)."""
        item = (topics.features(self._site, self._gw, s.stream), s.to_json())
        with self._lock:
            if len(self._summaries) == self._summaries.maxlen:
                self._n["dropped_summaries"] += 1
            self._summaries.append(item)
        self._wake.set()

    def send_health(self, health: dict[str, Any]) -> None:
        """Publish ``health`` retained at QoS1 (latest wins if the previous is in flight).

        It also becomes the last will (with status "offline"), used from the next connect.
        """
        self._set_retained("health", health)
        self._offline = offline_health(self._site, self._gw, health)
        self._client.will_set(self._health_topic, self._offline, qos=1, retain=True)

    def send_model_state(self, state: dict[str, Any]) -> None:
        """Publish the model state retained at QoS1 (latest wins)."""
        self._set_retained("model_state", state)

    @property
    def stats(self) -> dict[str, Any]:
        """Counters since start: published, acked, redelivered, rejected, summaries_sent,
        dropped_summaries, model_packages; and connected, inflight, outbox_depth,
        outbox_evicted (this process), sender_alive."""
        with self._lock:
            out: dict[str, Any] = dict(self._n)
            out["inflight"] = len(self._inflight)
        out.update(connected=self._connected.is_set(), outbox_depth=self._outbox.depth(),
                   outbox_evicted=self._outbox.evicted,
                   sender_alive=self._thread is not None and self._thread.is_alive())
        return out

    def _set_retained(self, name: str, doc: dict[str, Any]) -> None:
        payload = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
        with self._lock:
            self._retained[name].latest = payload
        self._wake.set()

    # -- paho callbacks (network thread): enqueue only ----------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    rc: Any, properties: Any) -> None:
        if rc.is_failure:
            log.warning("uplink connect refused reason=%s", rc)
            return
        client.subscribe(self._model_topic, qos=1)
        log.info("uplink connected session_present=%s", flags.session_present)
        self._connected.set()
        self._notes.put(("up",))
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       properties: Any) -> None:
        if self._connected.is_set():
            log.info("uplink disconnected reason=%s", rc)
        self._connected.clear()
        self._notes.put(("down",))
        self._wake.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any,
                    properties: Any) -> None:
        self._notes.put(("pub", mid, rc.is_failure, str(rc)))
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self._model_topic and msg.payload and self._on_model_package:
            with self._lock:
                self._n["model_packages"] += 1
            self._on_model_package(bytes(msg.payload))

    # -- sender thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            timeout = None if self._rescan_at is None else self._rescan_at - time.monotonic()
            self._wake.wait(None if timeout is None else max(timeout, 0.0))
            self._wake.clear()
            try:
                self._step()
            except sqlite3.OperationalError as exc:  # e.g. disk full
                log.error("uplink outbox error, retrying in 1 s: %s", exc)
                self._cursor = 0  # rows whose ack failed are sent again
                self._stop.wait(1.0)
                self._wake.set()
            if self._stop.is_set():
                return
            with self._idle:
                self._idle.notify_all()

    def _step(self) -> None:
        self._process_notes()
        if self._up and not self._stop.is_set():
            if self._rescan_at is not None and time.monotonic() >= self._rescan_at:
                self._cursor, self._rescan_at = 0, None
            self._send_retained()
            self._send_summaries()
            self._send_events()

    def _process_notes(self) -> None:
        acked: list[int] = []
        while True:
            try:
                note = self._notes.get_nowait()
            except queue.Empty:
                break
            if note[0] == "up":
                self._went_up()
            elif note[0] == "down":
                self._up = False
            else:
                self._published(note[1], note[2], note[3], acked)
        if acked:
            with self._lock:  # counted first: flush() returns once the depth is 0
                self._n["acked"] += len(acked)
            self._outbox.ack_many(acked)

    def _went_up(self) -> None:
        self._up, self._cursor = True, 0
        for mid in [m for m, (kind, _) in self._by_mid.items() if kind == "summary"]:
            del self._by_mid[mid]  # QoS0 packets queued before the drop are lost
        self._summary_outstanding = 0
        with self._lock:
            self._n["redelivered"] += len(self._inflight)  # paho resends them with DUP
            for slot in self._retained.values():
                if slot.latest is None and slot.mid is None:
                    slot.latest = slot.last

    def _published(self, mid: int, failed: bool, reason: str, acked: list[int]) -> None:
        owner = self._by_mid.pop(mid, None)
        if owner is None:
            return
        kind, item_id = owner
        if kind == "summary":
            self._summary_outstanding -= 1
        elif kind != "event":
            with self._lock:
                self._retained[kind].mid = None
            if failed:
                log.warning("uplink %s refused by broker reason=%s", kind, reason)
        elif failed:
            with self._lock:
                del self._inflight[item_id]
                self._n["rejected"] += 1
            self._rescan_at = time.monotonic() + self._rejected_retry_s
            log.warning("uplink event refused by broker id=%d reason=%s", item_id, reason)
        else:
            with self._lock:
                del self._inflight[item_id]
            acked.append(item_id)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int | None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in _SENT:
            log.warning("uplink publish failed topic=%s rc=%s", topic, info.rc)
            return None
        return info.mid

    def _send_retained(self) -> None:
        for name, slot in self._retained.items():
            with self._lock:
                payload = slot.latest
                if payload is None or slot.mid is not None:
                    continue
                slot.latest, slot.last, slot.mid = None, payload, -1  # -1: being published
            mid = self._publish(slot.topic, payload, 1, True)
            with self._lock:
                slot.mid = mid
            if mid is not None:
                self._by_mid[mid] = (name, 0)

    def _send_summaries(self) -> None:
        while self._summary_outstanding < _SUMMARY_INFLIGHT:
            with self._lock:
                if not self._summaries:
                    return
                topic, payload = self._summaries.popleft()
            mid = self._publish(topic, payload, 0)
            with self._lock:
                self._n["summaries_sent" if mid is not None else "dropped_summaries"] += 1
            if mid is not None:
                self._by_mid[mid] = ("summary", 0)
                self._summary_outstanding += 1

    def _send_events(self) -> None:
        free = self._window - len(self._inflight)
        if free <= 0:
            return
        rows = self._outbox.pending(free + len(self._inflight), after=self._cursor)
        for item_id, topic, payload in rows:
            if item_id in self._inflight:  # carried over a reconnect: paho resends it
                self._cursor = max(self._cursor, item_id)
                continue
            if free == 0:
                return
            mid = self._publish(topic, payload, 1)
            if mid is None:
                return
            self._cursor, free = max(self._cursor, item_id), free - 1
            self._by_mid[mid] = ("event", item_id)
            with self._lock:
                self._inflight[item_id] = mid
                self._n["published"] += 1
                self._n["redelivered"] += item_id <= self._recovered_max
