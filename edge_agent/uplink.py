"""Uplink: the gateway's publisher to the cloud broker (events, summaries, health, model state).

Events are at-least-once: `Uplink.send_event` commits the event to the `Outbox` first and
only then wakes the sender thread, which publishes outbox rows at QoS1 with at most
``window`` in flight and deletes a row only after a successful PUBACK. After a broker outage
paho resends what was in flight and the sender continues from the outbox; after a process
death a new `Uplink` on the same outbox publishes every row left in it. The cloud dedupes by
event id.

One thread publishes (the sender, `edge_agent.uplink_sender`); paho's network thread only
enqueues notifications, so no lock is held across ``publish()`` and no disk I/O happens in a
callback. Summaries (QoS0) go through a small bounded queue (oldest dropped, counted); health
and model state (QoS1, retained) are "latest wins" slots, republished after every reconnect.
This module holds the client, its callbacks and what the pipeline calls.

Offline: the broker publishes the last will (retained health with status "offline" and every
`HEALTH_KEYS` key) if the connection dies without a DISCONNECT. MQTT fixes the will at CONNECT,
so its other values are those of the last health sent before the current connection (zeros
before the first); `Uplink.stop` publishes the same message from the latest health itself.
Stop the uplink before closing the outbox; an `Uplink` starts once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent import topics
from edge_agent.config import GatewayConfig
from edge_agent.events import Event
from edge_agent.mqtt_client import Protocol, Will, make_client
from edge_agent.store_forward import Outbox
from edge_agent.summary import FeatureSummary
from edge_agent.uplink_retained import offline_health
from edge_agent.uplink_sender import UplinkSender

__all__ = ["Uplink", "offline_health"]

log = logging.getLogger(__name__)

_SENT = (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)  # NO_CONN: paho queued it for reconnect


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
    on_label : callable, optional
        Called on paho's network thread with the payload of each operator label of this
        gateway (retained, `edge_agent.labels`): `edge_agent.labels.LabelBook.handle`.
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
        on_label: Callable[[bytes], None] | None = None,
    ) -> None:
        site, gw = cfg.gateway.site, cfg.gateway.id
        self._packed = cfg.uplink.summary_format == "packed"
        self._site, self._gw = site, gw
        self._outbox = outbox
        self._on_model_package = on_model_package
        self._events_topic = topics.events(site, gw)
        self._model_topic = topics.model(site, gw)
        self._on_label = on_label
        self._labels_prefix = topics.labels(site, gw)[:-1]  # ".../labels/"
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
        self._connected = threading.Event()
        self._sender = UplinkSender(
            outbox, self._publish, window=window, summary_queue=summary_queue,
            rejected_retry_s=rejected_retry_s,
            retained={"health": topics.health(site, gw),
                      "model_state": topics.model_state(site, gw)})

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start paho's network loop (connects, reconnects with backoff) and the sender."""
        self._sender.start(self._client.loop_start)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the sender, publish the "offline" health, disconnect and join paho's loop.

        Unacknowledged events stay in the outbox for the next start.
        """
        if not self._sender.stop(timeout):
            return
        if self._connected.is_set():
            info = self._client.publish(self._health_topic, self._offline, 1, True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                info.wait_for_publish(min(timeout, 2.0))
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        log.info("uplink stopped stats=%s", self.stats)

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until connected to the broker (or ``timeout``); return whether connected."""
        return self._connected.wait(timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until the outbox is empty, no event is in flight and the latest health and
        model state are acknowledged (summaries are not waited for); return whether so."""
        return self._sender.wait_idle(timeout)

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
        self._sender.wake()

    def send_summary(self, s: FeatureSummary) -> None:
        """Queue a summary for QoS0 publishing; never blocks (drops the oldest when full)."""
        self._sender.queue_summary(topics.features(self._site, self._gw, s.stream),
                                   s.to_packed() if self._packed else s.to_json())

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
        out = self._sender.counters()
        out.update(connected=self._connected.is_set(), outbox_depth=self._outbox.depth(),
                   outbox_evicted=self._outbox.evicted, sender_alive=self._sender.alive)
        return out

    def _set_retained(self, name: str, doc: dict[str, Any]) -> None:
        payload = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
        self._sender.set_retained(name, payload)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int | None:
        """The sender's way out (sender thread); None if paho refused the message."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in _SENT:
            log.warning("uplink publish failed topic=%s rc=%s", topic, info.rc)
            return None
        return info.mid

    # -- paho callbacks (network thread): enqueue only ----------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    rc: Any, properties: Any) -> None:
        if rc.is_failure:
            log.warning("uplink connect refused reason=%s", rc)
            return
        client.subscribe(self._model_topic, qos=1)
        if self._on_label is not None:
            client.subscribe(topics.labels(self._site, self._gw), qos=1)
        log.info("uplink connected session_present=%s", flags.session_present)
        self._connected.set()
        self._sender.note("up")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       properties: Any) -> None:
        if self._connected.is_set():
            log.info("uplink disconnected reason=%s", rc)
        self._connected.clear()
        self._sender.note("down")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any,
                    properties: Any) -> None:
        self._sender.note("pub", mid, rc.is_failure, str(rc))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self._model_topic and msg.payload and self._on_model_package:
            self._sender.count("model_packages")
            self._on_model_package(bytes(msg.payload))
        elif msg.topic.startswith(self._labels_prefix) and msg.payload and self._on_label:
            self._sender.count("labels")
            self._on_label(bytes(msg.payload))
