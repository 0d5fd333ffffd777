"""The writer thread: records to lines, batches to InfluxDB, retries, then acknowledges.

A QoS1 message is acknowledged to the broker only after every line of its batch is in
InfluxDB (or InfluxDB rejected the line as bad data), in the order received. So while
InfluxDB is down nothing QoS1 is lost: the writer keeps retrying its batch with backoff,
unacknowledged messages stay at the broker (and survive an ingestion restart through the
persistent session), and QoS0 summaries wait in the buffer up to its bound.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from cloud import codec, model_health, schema
from cloud.influx import InfluxError
from cloud.ingest.buffer import Backoff, Buffer, Item
from cloud.ingest.config import IngestSettings
from cloud.ingest.downsample import Downsampler
from cloud.ingest.parse import EventRecord, FeaturesRecord, HealthRecord, ModelStateRecord
from cloud.ingest.stats import IngestStats, RateLimitedLog

log = logging.getLogger(__name__)
_RP_ORDER = (schema.RP_EVENTS, schema.RP_RAW, schema.RP_HISTORY)


class WriteClient(Protocol):
    def write(self, db: str, lines: list[str], rp: str | None = None, precision: str = "ns",
              timeout: float | None = None) -> None: ...


class Writer:
    """Consume `buffer` in batches on one thread until `stop` and the buffer is drained.

    Parameters
    ----------
    client : InfluxClient-like
        Needs ``write(db, lines, rp=..., timeout=...)`` raising `InfluxError`.
    ack : callable
        ``ack(mid)`` for QoS1 messages once stored.
    ensure_schema : callable
        Called when a write finds the database missing (it was dropped).
    wait : callable
        ``wait(seconds)``: the backoff pause, cut short by `stop`; tests inject it.
    """

    def __init__(self, client: WriteClient, buffer: Buffer, stats: IngestStats,
                 settings: IngestSettings, *, ack: Callable[[int], object],
                 ensure_schema: Callable[[], None] = lambda: None,
                 wait: Callable[[float], object] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 backoff: Backoff | None = None) -> None:
        self.client, self.buffer, self.stats, self.s = client, buffer, stats, settings
        self._ack = ack
        self._ensure_schema = ensure_schema
        self.stop_event = threading.Event()
        self._interrupt = threading.Event()  # cuts a backoff wait short when stop() comes
        self._wait = wait or self._interrupt.wait
        self._clock = clock
        self._backoff = backoff or Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._down = Downsampler(settings.history_step_s, clock=clock)
        self._fleet_t: dict[tuple[str, str], int] = {}
        self._last_state: dict[tuple[str, str], str] = {}
        self._limited = RateLimitedLog(log)
        self._drain_deadline = float("inf")
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="ingest-writer")
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Write what is buffered (retrying for at most ``drain_s``), then end the thread."""
        self._drain_deadline = self._clock() + self.s.drain_s
        self.stop_event.set()
        self._interrupt.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        s = self.s
        unwritten: list[Item] = []
        while not self.stop_event.is_set():
            batch = self.buffer.get_batch(max_lines=s.batch_lines, max_bytes=s.batch_bytes,
                                          linger_s=s.linger_s, idle_s=s.idle_s, timeout=0.5)
            if not self.process(batch, self._down.flush_idle()):
                unwritten = batch  # stopped, and the drain time ran out on this batch
                break
        rest = self.buffer.drain()
        if unwritten or not self.process(rest, self._down.flush_all()):
            unwritten += rest
            lost = sum(1 for i in unwritten if i.qos == 0 and i.record is not None)
            self.stats.add("dropped", "shutdown", lost)
            log.warning("event=shutdown_unwritten messages=%d qos0_lost=%d "
                        "qos1_left_at_broker=%d", len(unwritten), lost,
                        sum(1 for i in unwritten if i.qos > 0))

    def process(self, items: list[Item], extra_history: list[str] | None = None) -> bool:
        """Write one batch and ack it; False if stopped before it was written (no acks)."""
        by_rp: dict[str, list[str]] = {rp: [] for rp in _RP_ORDER}
        by_rp[schema.RP_HISTORY].extend(extra_history or ())
        for item in items:
            if item.record is not None:
                for rp, line in self._lines(item):
                    by_rp[rp].append(line)
        for rp in _RP_ORDER:
            if by_rp[rp] and not self._write(rp, by_rp[rp]):
                return False
            self.stats.add("lines", rp, len(by_rp[rp]))
        acked = 0
        for item in items:
            if item.qos > 0:
                self._ack(item.mid)
                acked += 1
        if items:
            self.stats.batch_written(sum(i.record is not None for i in items), acked)
        return True

    def _lines(self, item: Item) -> list[tuple[str, str]]:
        r = item.record
        if isinstance(r, FeaturesRecord):
            raw = r.raw_line()
            before = self._down.late
            out = [(schema.RP_RAW, raw)] + [(schema.RP_HISTORY, h) for h in self._down.add(r)]
            if self._down.late > before:
                self.stats.add("dropped", "late_history")
            return out
        if isinstance(r, EventRecord):
            return [(schema.RP_EVENTS, codec.event_line(r.event, item.received_ns))]
        if isinstance(r, HealthRecord):
            key = (r.data["site"], r.data["gateway"])
            newest = r.data["t_ns"] >= self._fleet_t.get(key, 0)
            if newest:
                self._fleet_t[key] = r.data["t_ns"]
            health, *fleet = codec.health_lines(r.data, item.received_ns, fleet=newest)
            drift = [(schema.RP_HISTORY, ln) for ln in model_health.lines(r.data)]
            return [(schema.RP_HISTORY, health)] + [(schema.RP_EVENTS, f) for f in fleet] + drift
        if isinstance(r, ModelStateRecord):
            key = (r.site, r.gateway)
            if "t_ns" not in r.data:  # timed by arrival: skip replays of the retained copy
                state = json.dumps(r.data, sort_keys=True, default=str)
                if self._last_state.get(key) == state:
                    return []
                self._last_state[key] = state
            lines = codec.model_state_lines(r.site, r.gateway, r.data, item.received_ns)
            return [(schema.RP_EVENTS, ln) for ln in lines]
        raise TypeError(f"unknown record {type(r).__name__}")  # pragma: no cover

    def _write(self, rp: str, lines: list[str]) -> bool:
        """Write until done; True when written or rejected as bad data, False if stopped."""
        while True:
            try:
                self.client.write(self.s.db, lines, rp=rp, timeout=self.s.write_timeout_s)
                self._backoff.reset()
                return True
            except InfluxError as exc:
                if exc.status == 400 and not exc.database_not_found:
                    # bad data: InfluxDB wrote the good lines of the batch and names the rest
                    self.stats.add("dropped", "rejected", 1)
                    self._limited.log(logging.ERROR, "rejected", "event=lines_rejected rp=%s "
                                      "lines=%d error=%r", rp, len(lines), str(exc)[:300])
                    return True
                self._limited.log(logging.WARNING, "write", "event=write_failed rp=%s lines=%d "
                                  "retryable=%s error=%r", rp, len(lines), exc.retryable,
                                  str(exc)[:300])
                if exc.database_not_found:
                    try:
                        self._ensure_schema()
                    except InfluxError as exc2:
                        log.debug("event=schema_retry_failed error=%r", str(exc2))
            self.stats.retry()
            delay = self._backoff.next()
            if self.stop_event.is_set():  # draining: retry only until the drain deadline
                remaining = self._drain_deadline - self._clock()
                if remaining <= 0:
                    return False
                delay = min(delay, remaining)
            self._wait(delay)
            self._interrupt.clear()
