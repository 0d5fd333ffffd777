"""The delivery thread: the SQLite queue to webhooks and MQTT, retried until delivered.

Each receiver gets its notifications in the order they were queued; when one fails, that
receiver's queue waits (exponential backoff with jitter, capped) and the other receivers
carry on. A notification leaves the queue only after its receiver took it (HTTP 2xx, or
the broker's PUBACK), so it is delivered at least once; a receiver that is down for hours
gets everything when it is back, also after an alerting restart.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from cloud.alerting.state import AlertState, Queued
from firmware_configs.alerting import AlertingConfig, Receiver

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """The receiver did not take the notification (retried later)."""


class Sender(Protocol):
    def send(self, payload: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class WebhookSender:
    """POST the Alertmanager JSON; a 2xx reply is a delivery."""

    def __init__(self, receiver: Receiver) -> None:
        assert receiver.url is not None
        self.url = receiver.url
        headers = {"Content-Type": "application/json", "User-Agent": "fiberwatch-alerting/1"}
        if receiver.bearer_token_env:
            token = os.environ.get(receiver.bearer_token_env)
            if not token:
                raise ValueError(f"receiver {receiver.name!r}: environment variable "
                                 f"{receiver.bearer_token_env} is not set")
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(timeout=receiver.timeout_s, headers=headers,
                                    follow_redirects=False, trust_env=False)

    def send(self, payload: dict[str, Any]) -> None:
        try:
            reply = self._client.post(self.url, content=json.dumps(payload).encode())
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= reply.status_code < 300:
            raise DeliveryError(f"HTTP {reply.status_code}")

    def close(self) -> None:
        self._client.close()


class _Pubacks:
    """The broker's PUBACK reason per message id. Over MQTT v5 a publish the broker refuses
    (e.g. a topic the login's ACL does not allow) is still acknowledged, with a failure
    reason: such an alert is not delivered. One per client (its ``on_publish``)."""

    def __init__(self, client: Any) -> None:
        self._codes: dict[int, Any] = {}
        self._lock = threading.Lock()
        client.on_publish = self._on_publish

    @staticmethod
    def of(client: Any) -> _Pubacks:
        acks = getattr(client, "_fiberwatch_pubacks", None)
        if not isinstance(acks, _Pubacks):
            acks = _Pubacks(client)
            client._fiberwatch_pubacks = acks
        return acks

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any = None, _p: Any = None) -> None:
        with self._lock:  # paho calls this before the message counts as published
            self._codes[mid] = reason

    def pop(self, mid: int) -> Any:
        with self._lock:
            return self._codes.pop(mid, None)


class MqttSender:
    """Publish the JSON on the receiver's topic (QoS1 by default) and wait for the broker."""

    def __init__(self, receiver: Receiver, client: Any, timeout_s: float = 5.0) -> None:
        assert receiver.topic is not None
        self.topic, self.qos, self.client, self.timeout_s = (receiver.topic, receiver.qos,
                                                             client, timeout_s)
        self._acks = _Pubacks.of(client)

    def send(self, payload: dict[str, Any]) -> None:
        if not self.client.is_connected():
            raise DeliveryError("not connected to the broker")
        info = self.client.publish(self.topic, json.dumps(payload).encode(), qos=self.qos)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise DeliveryError(f"publish failed: {exc}") from None
        if not info.is_published():
            raise DeliveryError("no PUBACK from the broker in time")
        reason = self._acks.pop(info.mid)
        if getattr(reason, "is_failure", False):
            raise DeliveryError(f"the broker refused the publish on {self.topic}: {reason}")

    def close(self) -> None:
        pass


class Dispatcher:
    """Deliver `state`'s queue with `senders` ({receiver name: Sender}) on one thread."""

    def __init__(self, config: AlertingConfig, state: AlertState, senders: dict[str, Sender], *,
                 rng: random.Random | None = None,
                 on_delivered: Callable[[Queued], None] | None = None) -> None:
        self.config, self.state, self.senders = config, state, senders
        self._rng = rng or random.Random()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_delivered = on_delivered
        self.sent = self.failures = 0

    def wake(self) -> None:
        """Something was queued: look now instead of at the next tick."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alert-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for sender in self.senders.values():
            sender.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                busy = self.pass_once()
            except Exception:  # a broken sender must not end deliveries for good
                log.exception("event=delivery_pass_failed")
                busy = False
            if not busy:
                self._wake.wait(0.25)

    def pass_once(self) -> bool:
        """One pass over the queue; True if something was delivered (look again at once)."""
        now = self.state.now()
        blocked: set[str] = set()
        delivered = False
        for item in self.state.due(limit=200):
            if item.receiver in blocked or self._stop.is_set():
                continue
            if item.next_ns > now:
                blocked.add(item.receiver)  # its head waits: keep this receiver's order
                continue
            if self._deliver(item):
                delivered = True
            else:
                blocked.add(item.receiver)
        return delivered

    def _deliver(self, item: Queued) -> bool:
        sender = self.senders.get(item.receiver)
        try:
            if sender is None:
                raise DeliveryError(f"no receiver named {item.receiver!r} in the config")
            sender.send(item.payload)
        except DeliveryError as exc:
            self.failures += 1
            delay = self._backoff(item.attempts)
            self.state.failed(item, str(exc), delay)
            log.warning("event=alert_delivery_failed receiver=%s id=%s attempt=%d retry_s=%.1f "
                        "error=%r", item.receiver, item.event_id, item.attempts + 1, delay,
                        str(exc)[:200])
            return False
        self.state.delivered(item)
        self.sent += 1
        if self._on_delivered is not None:
            self._on_delivered(item)
        return True

    def _backoff(self, attempts: int) -> float:
        a = self.config.alerting
        base = min(a.retry_initial_s * (2 ** min(attempts, 20)), a.retry_max_s)
        return base * (0.9 + 0.2 * self._rng.random())
