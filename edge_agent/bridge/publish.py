"""Frames to the site broker: QoS 0 on ``topics.raw(site, gateway, stream)``, as the
simulator and the interrogators publish them, through the shared client helper
(`edge_agent.mqtt_client`: credentials, TLS, reconnect backoff).

`publish` bounds the frames queued in paho; `flush` waits until every queued frame has been
written to the socket and raises `PublishLost` if any was not (the connection dropped): the
bridge then resumes from its last committed position, so nothing is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from edge_agent import topics
from edge_agent.config import BrokerConfig
from edge_agent.mqtt_client import make_client

log = logging.getLogger(__name__)


class PublishLost(ConnectionError):
    """A frame was not written to the broker connection."""


class BridgePublisher:
    """One MQTT connection publishing a gateway's raw frames."""

    def __init__(self, broker: BrokerConfig, site: str, gateway: str, *,
                 client_id: str | None = None, window: int = 16,
                 stop: threading.Event | None = None) -> None:
        self._topics = {s: topics.raw(site, gateway, s) for s in topics.STREAMS}
        self.window = max(1, window)
        self.stop = stop or threading.Event()
        self._pending: deque[mqtt.MQTTMessageInfo] = deque()
        self._connected = threading.Event()
        self._lost = False
        self.refused: str | None = None  # the broker's reason, once it refused us
        self.frames = 0
        self.bytes = 0
        self._client = make_client(broker, client_id or f"bridge-{site}-{gateway}",
                                   reconnect_delay_s=(0.2, 5.0))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.loop_start()

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: object,
                    _p: object) -> None:
        if getattr(reason, "is_failure", False):
            self.refused = str(reason)
            log.warning("event=connect_refused reason=%s", reason)
            return
        self.refused = None
        self._connected.set()
        log.info("event=connected")

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: object,
                       _p: object) -> None:
        self._connected.clear()
        log.warning("event=disconnected reason=%s", reason)

    def wait_connected(self, timeout: float) -> bool:
        """True once the broker accepted the connection (False on timeout, stop, or when the
        broker refused it: see `refused`)."""
        deadline = time.monotonic() + timeout
        while not self.stop.is_set() and time.monotonic() < deadline and not self.refused:
            if self._connected.wait(0.2):
                return True
        return self._connected.is_set()

    def publish(self, stream: str, frame: bytes) -> None:
        """Queue one frame; raise `PublishLost` if the connection is down."""
        while len(self._pending) >= self.window:
            self._reap(block=True)
        if not self._connected.is_set():
            raise PublishLost("not connected to the broker")
        info = self._client.publish(self._topics[stream], frame, qos=0)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise PublishLost(f"publish refused: {mqtt.error_string(info.rc)}")
        self._pending.append(info)
        self.frames += 1
        self.bytes += len(frame)
        self._reap(block=False)

    def _reap(self, block: bool) -> None:
        while self._pending:
            info = self._pending[0]
            try:
                if block:
                    block = False
                    info.wait_for_publish(0.5)
                done = info.is_published()
            except RuntimeError:  # the connection went away before it was written
                self._lost = True
                done = True
            if not done:
                if not self._connected.is_set():
                    self._lost = True
                    self._pending.popleft()
                    continue
                return
            self._pending.popleft()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued frame is on the socket; `PublishLost` if one is not."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            self._reap(block=True)
        lost, self._lost = self._lost or bool(self._pending), False
        self._pending.clear()
        if lost:
            raise PublishLost("frames were not written before the connection dropped")

    def close(self) -> None:
        try:
            self.flush(10.0)
        except PublishLost:
            log.warning("event=close_with_unsent_frames")
        self._client.disconnect()
        self._client.loop_stop()
