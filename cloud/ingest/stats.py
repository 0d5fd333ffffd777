"""Counters of the ingestion process, and a logger that repeats itself at a limited rate."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any


class IngestStats:
    """Thread-safe counters; `snapshot` returns a JSON-ready dict.

    Counters
    --------
    received[kind]
        Messages parsed into a record, per kind (event, features, health, model_state).
    malformed[reason]
        Messages not stored because they are invalid (reason e.g. ``features:json``).
    dropped[reason]
        Valid messages not stored: ``buffer_full`` (QoS0 while the buffer is at its bound),
        ``rejected`` (InfluxDB refused the batch's lines as bad data), ``shutdown`` (QoS0
        still buffered when the process stopped with InfluxDB unreachable), ``late_history``
        (a summary too late for its already written 10 s history bucket; its raw point is
        still stored).
    lines[rp]
        Lines written per retention policy. ``messages_written``, ``acked``, ``batches``,
        ``write_retries`` (failed attempts that were retried).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.malformed: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.lines: Counter[str] = Counter()
        self.messages_written = 0
        self.acked = 0
        self.batches = 0
        self.write_retries = 0
        self.last_write_ns = 0
        self.gauges: dict[str, Callable[[], int]] = {}

    def add(self, counter: str, key: str, n: int = 1) -> None:
        """Add `n` to ``counter[key]`` (counter: received, malformed, dropped, lines)."""
        with self._lock:
            getattr(self, counter)[key] += n

    def batch_written(self, messages: int, acked: int) -> None:
        with self._lock:
            self.batches += 1
            self.messages_written += messages
            self.acked += acked
            self.last_write_ns = time.time_ns()

    def retry(self) -> None:
        with self._lock:
            self.write_retries += 1

    def snapshot(self) -> dict[str, Any]:
        """All counters and gauges as plain dicts and ints."""
        with self._lock:
            out: dict[str, Any] = {
                "received": dict(self.received), "malformed": dict(self.malformed),
                "dropped": dict(self.dropped), "lines": dict(self.lines),
                "messages_written": self.messages_written, "acked": self.acked,
                "batches": self.batches, "write_retries": self.write_retries,
                "last_write_ns": self.last_write_ns,
            }
        out.update({name: fn() for name, fn in self.gauges.items()})
        return out


class RateLimitedLog:
    """Log at most one line per `key` every `interval_s`, saying how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless `key` was logged less than `interval_s` ago."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] += 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        self._log.log(level, msg + " suppressed=%d", *args, suppressed, exc_info=exc_info)
        return True
