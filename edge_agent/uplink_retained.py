"""The uplink's retained messages: latest-wins slots (health, model state) and the "offline"
health that is the last will (see `edge_agent.uplink`)."""

from __future__ import annotations

import json
import time
from typing import Any

from edge_agent.summary import HEALTH_KEYS, HEALTH_SCHEMA


def offline_health(site: str, gateway: str, last: dict[str, Any] | None) -> bytes:
    """The "offline" health message: every `HEALTH_KEYS` key, from the last health if any."""
    doc: dict[str, Any] = {k: 0 for k in HEALTH_KEYS}
    doc.update(drops={}, latency_ms={"p50": 0.0, "p99": 0.0}, model_version="none",
               model_hash="none")
    doc.update(last or {})
    doc.update(schema=HEALTH_SCHEMA, site=site, gateway=gateway, status="offline",
               t_ns=time.time_ns())
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


class RetainedSlot:
    """Latest-wins slot for one retained topic (the caller serialises access)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.latest: bytes | None = None  # waiting to be published
        self.last: bytes | None = None  # last published, resent after a reconnect
        self.mid: int | None = None  # in flight

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing is in flight."""
        return self.latest is None and self.mid is None

    def take(self) -> bytes | None:
        """The message to publish now, marked as being published (``mid`` -1); None if
        nothing waits or one is still in flight."""
        payload = self.latest
        if payload is None or self.mid is not None:
            return None
        self.latest, self.last, self.mid = None, payload, -1
        return payload

    def rearm(self) -> None:
        """After a reconnect: publish the last message again, unless newer or in flight."""
        if self.idle:
            self.latest = self.last
