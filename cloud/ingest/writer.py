"""The writer: records to lines (writer thread), batches to InfluxDB, retries, then
acknowledges (commit threads, `cloud.ingest.commits`; the next batch is built meanwhile).

A QoS1 message is acknowledged to the broker only after every line of its batch is in
InfluxDB (or went to the dead letters: lines InfluxDB can never take), in the order
received. So while InfluxDB is down nothing QoS1 is lost: the writer keeps retrying its
batch with backoff, unacknowledged messages stay at the broker (and survive an ingestion
restart through the persistent session), and QoS0 summaries wait in the buffer up to its
bound.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

from cloud import codec, model_health, schema
from cloud.influx import InfluxError, body_pieces
from cloud.ingest.buffer import Backoff, Buffer, Item
from cloud.ingest.commits import Commits
from cloud.ingest.config import IngestSettings
from cloud.ingest.deadletter import DeadLetters
from cloud.ingest.downsample import Downsampler
from cloud.ingest.lines import raw_lines
from cloud.ingest.parse import EventRecord, FeaturesRecord, HealthRecord, ModelStateRecord
from cloud.ingest.spool import Spool
from cloud.ingest.stats import IngestStats, RateLimitedLog
from cloud.ingest.supersede import Version, Versions, delete_statement

log = logging.getLogger(__name__)
_RP_ORDER = (schema.RP_EVENTS, schema.RP_RAW, schema.RP_HISTORY)


class WriteClient(Protocol):
    """``write`` (and, to delete superseded event points, ``query``)."""

    def write(self, db: str, lines: list[str] | bytes, rp: str | None = None, precision: str = "ns",
              timeout: float | None = None) -> None: ...


class Built(NamedTuple):
    """One batch turned into lines, ready to write: its items (to ack once written), its
    lines per retention policy, those lines joined as write bodies (built on the writer
    thread, so the commit thread only sends), and the old event points to delete once it
    is written."""

    items: list[Item]
    by_rp: dict[str, list[str]]
    superseded: list[Version]
    bodies: dict[str, bytes]


class Writer:
    """Consume `buffer` in batches until `stop` and the buffer is drained.

    The writer thread builds the next batch (`build`: lines and write bodies) while
    ``commit_threads`` commit threads write the ones before it (`cloud.ingest.commits`),
    so InfluxDB always has writes in flight. Their ``events`` lines, acknowledgements and
    spool commits go in the batches' order; a batch whose write fails is retried before
    anything after it is acknowledged. At most one built batch waits for a commit thread
    (and one more for its turn to be handed over).

    Parameters
    ----------
    client : InfluxClient-like
        Needs ``write(db, lines, rp=..., timeout=...)`` raising `InfluxError`.
    ack : callable
        ``ack(mid)`` for QoS1 messages once stored.
    ack_many : callable, optional
        ``ack_many([mid, ...])``: the same for a whole batch, in order, in one go.
    ensure_schema : callable
        Called when a write finds the database missing (it was dropped).
    wait : callable
        ``wait(seconds)``: the backoff pause, cut short by `stop`; tests inject it.
    """

    def __init__(self, client: WriteClient, buffer: Buffer, stats: IngestStats,
                 settings: IngestSettings, *, ack: Callable[[int], object],
                 ack_many: Callable[[list[int]], object] | None = None,
                 ensure_schema: Callable[[], None] = lambda: None,
                 wait: Callable[[float], object] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 backoff: Backoff | None = None, dead: DeadLetters | None = None,
                 spool: Spool | None = None) -> None:
        self.client, self.buffer, self.stats, self.s = client, buffer, stats, settings
        self._ack = ack
        self._ack_many = ack_many
        self._ensure_schema = ensure_schema
        self.stop_event = threading.Event()
        self._interrupt = threading.Event()  # cuts a backoff wait short when stop() comes
        self._wait = wait or self._interrupt.wait
        self._clock = clock
        self._backoff = backoff or Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._down = Downsampler(settings.history_step_s, clock=clock)
        self._fleet_t: dict[tuple[str, str], tuple[int, int]] = {}
        self._last_state: dict[tuple[str, str], str] = {}
        self._limited = RateLimitedLog(log)
        self._drain_deadline = float("inf")
        self._thread: threading.Thread | None = None
        self.dead = dead or DeadLetters(settings.dead_letter_path(),
                                        file_bytes=settings.dead_letter_file_bytes,
                                        files=settings.dead_letter_files,
                                        record_bytes=settings.dead_letter_record_bytes)
        self.spool = spool
        self._versions = Versions()
        self._superseded: list[Version] = []  # old points of re-sent events, to delete
        self._new_superseded: list[Version] = []  # those of the batch being built
        self._in_flight = 0  # built batches handed to the commit thread, not yet committed
        self._flight_lock = threading.Lock()
        self._status_at = -float("inf")
        self._status_seen = -1

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
        commits = Commits(self, s.commit_threads, self._one_done)
        commits.start()
        while not self.stop_event.is_set() and commits.alive():
            batch = self.buffer.get_batch(max_lines=s.batch_lines, max_bytes=s.batch_bytes,
                                          linger_s=s.linger_s, idle_s=s.idle_s, timeout=0.5,
                                          quick_s=s.quick_linger_s, busy=self._busy)
            self._submit(commits, self.build(batch, self._down.flush_idle()))
        self._submit(commits, self.build(self.buffer.drain(), self._down.flush_all()))
        commits.close()
        if unwritten := commits.unwritten:
            qos0 = [i for i in unwritten if i.qos == 0 and i.record is not None]
            lost = sum(1 for i in qos0 if i.spool is None)  # the spooled ones come back
            self.stats.add("dropped", "shutdown", lost)
            log.warning("event=shutdown_unwritten messages=%d qos0_lost=%d qos0_spooled=%d "
                        "qos1_left_at_broker=%d", len(unwritten), lost, len(qos0) - lost,
                        sum(1 for i in unwritten if i.qos > 0))

    def _submit(self, commits: Commits, built: Built) -> None:
        with self._flight_lock:
            self._in_flight += 1
        commits.submit(built)

    def _one_done(self) -> None:
        """A commit thread is done with a batch (written, or not)."""
        with self._flight_lock:
            self._in_flight -= 1
        self.buffer.wake()  # a batch filling may close now if nothing else is in flight

    def _busy(self) -> bool:
        """Whether a built batch is being written or waits for a commit thread."""
        return self._in_flight > 0

    def process(self, items: list[Item], extra_history: list[str] | None = None) -> bool:
        """Write one batch and ack it; False if stopped before it was written (no acks)."""
        return self.commit(self.build(items, extra_history))

    def build(self, items: list[Item], extra_history: list[str] | None = None) -> Built:
        """The lines of one batch (`extra_history`: closed history buckets to add)."""
        by_rp: dict[str, list[str]] = {rp: [] for rp in _RP_ORDER}
        by_rp[schema.RP_HISTORY].extend(extra_history or ())
        features = [i.record for i in items if isinstance(i.record, FeaturesRecord)]
        raw = iter(raw_lines(features))  # the whole batch's at once, in order
        for item in items:
            if item.record is not None:
                for rp, line in self._lines(item, raw):
                    by_rp[rp].append(line)
        superseded, self._new_superseded = self._new_superseded, []
        bodies = {rp: b"".join(body_pieces(lines)) for rp, lines in by_rp.items() if lines}
        return Built(items, by_rp, superseded, bodies)

    def commit(self, built: Built) -> bool:
        """Write a built batch, then ack it; False if stopped before it was written. (The
        commit threads run the same steps, overlapping batches where allowed: `Commits`.)"""
        if not (self.write_events(built) and self.write_stored(built)):
            return False
        self.finish(built)
        return True

    def write_events(self, built: Built) -> bool:
        """The batch's ``events`` lines (whose order across batches matters)."""
        return self._write_rps(built, (schema.RP_EVENTS,))

    def write_stored(self, built: Built) -> bool:
        """The batch's ``raw`` and ``history`` lines (each point written once: any order)."""
        return self._write_rps(built, (schema.RP_RAW, schema.RP_HISTORY))

    def _write_rps(self, built: Built, rps: tuple[str, ...]) -> bool:
        for rp in rps:
            lines = built.by_rp[rp]
            if lines and not self._write(rp, lines, built.bodies.get(rp)):
                return False
            self.stats.add("lines", rp, len(lines))
        return True

    def finish(self, built: Built) -> None:
        """After a batch is written: delete the event points it superseded, ack its QoS1
        messages in order, commit its QoS0 ones in the spool, count it."""
        items = built.items
        self._superseded += built.superseded  # their new points are written now
        self._delete_superseded()
        mids = [item.mid for item in items if item.qos > 0]
        if self._ack_many is not None:
            self._ack_many(mids)
        else:
            for mid in mids:
                self._ack(mid)
        spooled = [i.spool for i in items if i.spool is not None]
        if spooled and self.spool is not None:
            self.spool.commit(max(spooled))
        if items:
            self.stats.batch_written(sum(i.record is not None for i in items), len(mids))

    def _lines(self, item: Item, raw: Iterator[str]) -> list[tuple[str, str]]:
        """The (retention policy, line) pairs of one item; `raw` yields the batch's
        ``features`` lines in order (`raw_lines`)."""
        r = item.record
        if isinstance(r, FeaturesRecord):
            before = self._down.late
            out = [(schema.RP_RAW, next(raw))] + [(schema.RP_HISTORY, h)
                                                  for h in self._down.add(r)]
            if self._down.late > before:
                self.stats.add("dropped", "late_history")
            return out
        if isinstance(r, EventRecord):
            old = self._versions.replace(r.event)
            if old is not None:  # same event, other tags or start: its old point goes
                self._new_superseded.append(old)
            return [(schema.RP_EVENTS, codec.event_line(r.event, item.received_ns,
                                                        r.gateway_event_id or None))]
        if isinstance(r, HealthRecord):
            key = (r.data["site"], r.data["gateway"])
            # ordered by the gateway's clock, but never ahead of ours: a heartbeat from
            # the future must not make every later one look old (the fleet row would freeze)
            t_order = (min(r.data["t_ns"], item.received_ns), r.data["t_ns"])
            newest = t_order >= self._fleet_t.get(key, (0, 0))
            if newest:
                self._fleet_t[key] = t_order
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

    def _delete_superseded(self) -> None:
        """Delete the old points of events re-sent with other tags or start (now that the
        new ones are written); what fails is tried again after the next batch."""
        query = getattr(self.client, "query", None)
        while self._superseded and query is not None:
            try:
                query(delete_statement(self._superseded[0]), db=self.s.db)
            except InfluxError as exc:
                self._limited.log(logging.WARNING, "supersede", "event=delete_failed "
                                  "error=%r", str(exc)[:300])
                return
            self._superseded.pop(0)
            self.stats.add("lines", "events_superseded")

    def write_status(self, force: bool = False) -> None:
        """Write the ``ingest`` status point (dead letters, malformed, dropped) that the
        API's /health reads: when the dead-letter count changed, or every
        ``status_interval_s``. Best effort: a failure waits for the next time."""
        now = self._clock()
        changed = self.dead.count != self._status_seen and now - self._status_at >= 1.0
        if not (force or changed or now - self._status_at >= self.s.status_interval_s):
            return
        self._status_at = now
        snap = self.stats.snapshot()
        fields = {"dead_letters": self.dead.count,
                  "dead_letter_write_errors": self.dead.write_errors,
                  "malformed": sum(snap["malformed"].values()),
                  "dropped": sum(snap["dropped"].values()),
                  "messages_written": snap["messages_written"], "updated_ns": time.time_ns()}
        line = codec.line(schema.INGEST, {"client_id": self.s.instance}, fields, 0)
        try:
            self.client.write(self.s.db, [line], rp=schema.RP_EVENTS, timeout=5.0)
        except InfluxError as exc:
            log.debug("event=status_write_failed error=%r", str(exc))
            return
        self._status_seen = self.dead.count

    def _write(self, rp: str, lines: list[str], body: bytes | None = None) -> bool:
        """Write `lines` (`body`: them joined, if built already) in bodies of at most
        ``max_body_bytes``; a line InfluxDB can never take goes to the dead letters. True
        when done, False if stopped first.

        A body that InfluxDB refuses as bad (400, 413) or breaks off (a broken pipe on a
        large body: influxd 1.x past its body limit) is split in halves until the lines
        that cannot be written are alone; rewriting the good ones is idempotent.
        """
        parts = [lines]  # a stack: the first half is popped first, so the order holds
        while parts:
            part = parts.pop()
            whole = body if part is lines else None  # the prebuilt body, until split
            size = len(whole) if whole is not None else _body_bytes(part)
            if size > self.s.max_body_bytes and len(part) > 1:
                parts += _halves(part)
                continue
            verdict = ("dead:too_large" if size > self.s.max_body_bytes
                       else self._send(rp, part, size, whole))
            if verdict == "stopped":
                return False
            if verdict == "split":
                parts += _halves(part)
            elif verdict.startswith("dead:"):
                self._dead_letter(verdict[5:], rp, part[0])
        return True

    def _dead_letter(self, reason: str, rp: str, line: str) -> None:
        self.dead.add(reason, rp, line)
        self.stats.add("dropped", "dead_letter")

    def _send(self, rp: str, part: list[str], size: int, body: bytes | None = None) -> str:
        """One body until written: ``ok``, ``split``, ``dead:<reason>`` or ``stopped``."""
        broken = 0
        while True:
            try:
                self.client.write(self.s.db, part if body is None else body, rp=rp,
                                  timeout=self.s.write_timeout_s)
                self._backoff.reset()
                return "ok"
            except InfluxError as exc:
                verdict, broken = self._verdict(exc, part, size, broken)
                if verdict:
                    return verdict
                self._limited.log(logging.WARNING, "write", "event=write_failed rp=%s lines=%d "
                                  "bytes=%d retryable=%s error=%r", rp, len(part), size,
                                  exc.retryable, str(exc)[:300])
                if exc.database_not_found:
                    try:
                        self._ensure_schema()
                    except InfluxError as exc2:
                        log.debug("event=schema_retry_failed error=%r", str(exc2))
            if not self._pause():
                return "stopped"

    def _verdict(self, exc: InfluxError, part: list[str], size: int,
                 broken: int) -> tuple[str, int]:
        """What a failed write calls for ('' = retry later), and the broken-pipe count."""
        refused = exc.status == 413 or (exc.status == 400 and not exc.database_not_found)
        if refused:
            self._limited.log(logging.ERROR, "rejected", "event=lines_rejected lines=%d "
                              "status=%s error=%r", len(part), exc.status, str(exc)[:300])
            return ("split" if len(part) > 1 else f"dead:http_{exc.status}"), 0
        if exc.connection_broken and size > self.s.broken_split_bytes:
            if len(part) > 1:
                return "split", 0
            broken += 1
            if broken >= self.s.broken_attempts:
                return "dead:broken_pipe", broken
        return "", broken

    def _pause(self) -> bool:
        """The backoff wait before a retry; False if stopped and the drain time is over."""
        self.stats.retry()
        delay = self._backoff.next()
        if self.stop_event.is_set():  # draining: retry only until the drain deadline
            remaining = self._drain_deadline - self._clock()
            if remaining <= 0:
                return False
            delay = min(delay, remaining)
        self._wait(delay)
        self._interrupt.clear()
        return True


def _body_bytes(lines: list[str]) -> int:
    """The size of ``"\n".join(lines).encode()`` without building it."""
    return sum(len(ln) if ln.isascii() else len(ln.encode()) for ln in lines) + len(lines) - 1


def _halves(lines: list[str]) -> list[list[str]]:
    """[second half, first half]: pushed on a stack, the first half comes off first."""
    mid = len(lines) // 2
    return [lines[mid:], lines[:mid]]
