"""Counters of the ingestion process (and, re-exported, the project's rate-limited logger)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from edge_agent.logs import RateLimitedLog  # noqa: F401 - re-exported: its old home


class IngestStats:
    """Thread-safe counters; `snapshot` returns a JSON-ready dict.

    Counters
    --------
    received[kind]
        Messages parsed into a record, per kind (event, features, health, model_state);
        ``replayed``: summaries taken back from the spool of a killed run.
    malformed[reason]
        Messages not stored because they are invalid (reason e.g. ``features:json``,
        ``event:too_large`` above the kind's byte cap, ``health:future_time``).
    dropped[reason]
        Valid messages not stored: ``buffer_full`` (QoS0 while the buffer is at its bound),
        ``dead_letter`` (lines InfluxDB can never take: refused with 400/413 when alone, or
        too large for one write body; kept in the dead-letter files), ``shutdown`` (QoS0
        still buffered when the process stopped with InfluxDB unreachable), ``late_history``
        (a summary too late for its already written 10 s history bucket; its raw point is
        still stored).
    lines[rp]
        Lines written per retention policy. ``messages_written``, ``acked``, ``batches``,
        ``write_retries`` (failed attempts that were retried). Gauges of `run_ingest`:
        ``buffer_messages``, ``buffer_bytes``, ``dead_letters`` (records in the dead-letter
        files).
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
