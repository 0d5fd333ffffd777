"""The source stage: raw frames from MQTT into a bounded queue.

`MqttSource` owns one paho client (separate from the uplink's; built by
`edge_agent.mqtt_client.make_client`: credentials, TLS, reconnect backoff). It subscribes in
``on_connect`` (so reconnects resubscribe) and its ``on_message`` only wraps the payload in a
`RawMessage` and offers it to a `FrameQueue`; decoding happens on the processing thread.

Backpressure (``ingest.backpressure``) when the processing thread falls behind:

``drop_oldest`` (default)
    The stream must stay current: when the queue is full, the oldest frames are discarded
    until it is half full, then the new frame is queued.
``drop_newest``
    Arriving frames are discarded while the queue is full, and keep being discarded until
    it has drained to half full.

Either way frames are shed in blocks, not one at a time: dropping single frames under
sustained overload would leave a sequence gap between almost every pair of frames, and since
windows never bridge a gap, no window would ever form. Every dropped frame is counted as
``queue_full``. The queue is full at ``queue_frames`` frames or `MAX_QUEUE_BYTES` of
payload, whichever comes first (256 frames of a 2,048-channel float32 DAS stream would
otherwise hold 200 MB).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import cast

import paho.mqtt.client as mqtt

from edge_agent import topics
from edge_agent.config import GatewayConfig
from edge_agent.frame_client import FrameClient
from edge_agent.metrics import Metrics
from edge_agent.mqtt_client import make_client
from edge_agent.types import RawMessage

log = logging.getLogger(__name__)
#: payload bytes the frame queue may hold
MAX_QUEUE_BYTES = 64 * 1024 * 1024


class FrameQueue:
    """A bounded FIFO of `RawMessage` with a block-shedding backpressure policy.

    Single producer (the network thread), single consumer (the processing thread).

    Parameters
    ----------
    maxsize : int
        Capacity in frames.
    policy : {"drop_oldest", "drop_newest"}
    metrics : Metrics
        Receives ``queue_full`` drop counts.
    max_bytes : int
        Payload bytes at which the queue counts as full, too.
    """

    def __init__(self, maxsize: int, policy: str, metrics: Metrics, *,
                 max_bytes: int = MAX_QUEUE_BYTES) -> None:
        if policy not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"unknown backpressure policy {policy!r}")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.policy = policy
        self._q: queue.Queue[RawMessage] = queue.Queue()
        self._metrics = metrics
        self._bytes = 0  # payload bytes queued
        self._bytes_lock = threading.Lock()
        self._shedding = False

    def _full(self, extra: int = 0) -> bool:
        return self._q.qsize() >= self.maxsize or self._bytes + extra > self.max_bytes

    def _above_half(self) -> bool:
        return self._q.qsize() > self.maxsize // 2 or self._bytes > self.max_bytes // 2

    def _put(self, item: RawMessage) -> None:
        with self._bytes_lock:
            self._bytes += len(item.payload)
        self._q.put_nowait(item)

    def _took(self, item: RawMessage) -> RawMessage:
        with self._bytes_lock:
            self._bytes -= len(item.payload)
        return item

    def offer(self, item: RawMessage) -> None:
        """Enqueue without blocking, applying the policy when full."""
        n = len(item.payload)
        if self.policy == "drop_newest":
            if (self._shedding and self._above_half()) or self._full(n):
                self._shedding = True
                self._metrics.drop("queue_full")
                return
            self._shedding = False
            self._put(item)
            return
        if self._full(n):
            dropped = 0
            while self._above_half() or self._full(n):
                if self.get_nowait() is None:
                    break
                dropped += 1
            self._metrics.drop("queue_full", dropped)
        self._put(item)

    def get(self, timeout: float | None = None) -> RawMessage | None:
        """Next item, or None after `timeout` seconds."""
        try:
            return self._took(self._q.get(timeout=timeout))
        except queue.Empty:
            return None

    def get_nowait(self) -> RawMessage | None:
        try:
            return self._took(self._q.get_nowait())
        except queue.Empty:
            return None

    def qsize(self) -> int:
        return self._q.qsize()


class MqttSource:
    """Subscribe to the configured streams' raw topics; enqueue every message.

    Parameters
    ----------
    cfg : GatewayConfig
    out : FrameQueue
        Where messages go.
    client_id : str, optional
        Defaults to ``fw-{site}-{gateway}-ingest``.

    Raises
    ------
    edge_agent.mqtt_client.MqttConfigError
        The password variable the config names is not set.
    """

    def __init__(self, cfg: GatewayConfig, out: FrameQueue, *, client_id: str | None = None):
        site, gw = cfg.gateway.site, cfg.gateway.id
        self.topics = [topics.raw(site, gw, s.kind) for s in cfg.streams]
        self._out = out
        self.connected_count = 0
        #: set once the broker has granted the subscriptions (cleared on disconnect)
        self.subscribed = threading.Event()
        self._client = make_client(cfg.broker, client_id or f"fw-{site}-{gw}-ingest",
                                   username=cfg.broker.source_username,
                                   client_class=FrameClient)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    def start(self) -> None:
        """Start the network thread; it connects in the background and reconnects."""
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect and join the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object,
                    reason_code: mqtt.ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            log.warning("event=ingest_connect_failed reason=%s", reason_code)
            return
        self.connected_count += 1
        client.subscribe([(t, 0) for t in self.topics])
        log.info("event=ingest_connected topics=%s", ",".join(self.topics))

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reason_codes: list[mqtt.ReasonCode], properties: object) -> None:
        if all(not rc.is_failure for rc in reason_codes):
            self.subscribed.set()
        else:
            log.warning("event=ingest_subscribe_refused reasons=%s", reason_codes)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason_code: mqtt.ReasonCode, properties: object) -> None:
        self.subscribed.clear()
        if reason_code.is_failure:
            log.warning("event=ingest_disconnected reason=%s", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object,
                    msg: mqtt.MQTTMessage) -> None:
        payload = cast(memoryview, msg.payload)  # `FrameClient`: a view, not a copy
        self._out.offer(RawMessage(msg.topic, payload, time.time_ns()))
