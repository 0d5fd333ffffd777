"""Durable outbox: what the gateway must deliver, on disk until the broker acknowledges it.

One SQLite table in WAL mode. `Outbox.put` commits with ``synchronous=FULL``: it returns only
after the row is committed and the WAL is fsynced, so an item survives a process kill *and* a
power loss (`Outbox.put_many`: several rows, one fsync). Acks commit with
``synchronous=NORMAL`` (no fsync of their own; they reach the disk with the next put or
checkpoint): a power loss can undo recent acks, which only means those items are sent again
(at-least-once either way). Rows leave the table only through an ack or eviction.

Disk full (or any other write error): the item is kept **in memory** (the *spill*) with the id
it was given, `pending` returns it like a stored row (so it is still delivered), and every
later write first retries writing the spill to disk (at most once a second); the error is
counted under its real name (``SQLITE_FULL``, ``SQLITE_IOERR_WRITE``...) in `Outbox.errors`
and never masked by a failing rollback. An ack that cannot be written is remembered and
retried the same way. The row and byte counters change only when a transaction commits, so
they stay equal to the table's contents.

Bounds: at most ``max_events`` items and ``max_bytes`` payload bytes (disk and spill
together), and nothing older than ``max_age_s``; the oldest are evicted first. Age is measured
on the *outbox clock*: ``clock`` (monotonic by default) continued across restarts from the
newest stored stamp, so it counts time the outbox was open and never jumps with the wall clock
(a gateway booting at 1970 and then stepping to today by NTP evicts nothing). `Outbox.evicted`
counts evictions **per process** (it starts at 0 on every open).

Ids are strictly increasing and never reused (``AUTOINCREMENT``, and spilled items take theirs
from the same sequence), so a stale acknowledgement can never delete a newer item.

One process owns an outbox at a time: opening takes an exclusive ``flock`` on
``<path>.lock`` (released by the kernel when the owner dies, even by SIGKILL) and a second
opener gets `OutboxError`. Within the process, every method is thread-safe.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge_agent.metrics import RateLimitedLog

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      REAL NOT NULL,
    topic   TEXT NOT NULL,
    payload BLOB NOT NULL
)
"""
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: a failed write is retried at most this often (s, on ``clock``)
RETRY_S = 1.0


class OutboxError(RuntimeError):
    """The outbox cannot be opened (locked by another process, or not a valid database)."""


@dataclass(frozen=True, slots=True)
class _Item:
    id: int
    ts: float
    topic: str
    payload: bytes


def error_name(exc: BaseException) -> str:
    """The SQLite error code name (``SQLITE_FULL``) or the exception's class name."""
    return str(getattr(exc, "sqlite_errorname", "") or type(exc).__name__)


class Outbox:
    """Bounded, durable FIFO of (topic, payload) items awaiting a broker acknowledgement.

    Parameters
    ----------
    path : Path
        SQLite database file; created with its folder if missing.
    max_events : int
        Most items kept; a `put` beyond it evicts the oldest.
    max_age_s : float
        Items older than this on the outbox clock are evicted on `put` and `pending`.
    max_bytes : int
        Most payload bytes kept; a `put` beyond it evicts the oldest.
    clock : callable, optional
        Monotonic seconds, injectable for tests (default `time.monotonic`).

    Attributes
    ----------
    evicted : int
        Items evicted (by count, bytes or age) since this object was opened.
    errors : dict of str to int
        Write errors by name since this object was opened.
    """

    def __init__(
        self, path: Path, *, max_events: int, max_age_s: float,
        max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_events < 1 or max_age_s <= 0 or max_bytes < 1:
            raise ValueError("max_events and max_bytes must be >= 1 and max_age_s > 0")
        self.path = Path(path)
        self.max_events, self.max_age_s, self.max_bytes = max_events, max_age_s, max_bytes
        self.evicted = 0
        self.errors: dict[str, int] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self._rlog = RateLimitedLog(log)
        self._spill: deque[_Item] = deque()
        self._spill_bytes = 0
        self._unacked: set[int] = set()  # acknowledged, but the DELETE is not yet written
        self._retry_at = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _take_process_lock(self.path.with_name(self.path.name + ".lock"))
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._sync = "FULL"
            self._db.execute(_SCHEMA)
            self._db.execute("CREATE INDEX IF NOT EXISTS outbox_ts ON outbox(ts)")
            self._recount()
            newest = self._db.execute("SELECT MAX(ts) FROM outbox").fetchone()[0]
            self._next_id = self._max_id_on_disk() + 1
        except sqlite3.DatabaseError as exc:
            os.close(self._lock_fd)
            raise OutboxError(f"{self.path}: {exc}") from exc
        self._clock0 = clock()
        self._base = float(newest or 0.0)
        self._closed = False
        log.info("outbox opened path=%s depth=%d", self.path, self._depth)

    # -- writes ------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes) -> int:
        """Append one item; return its id once it is committed and fsynced (or, if the disk
        refuses it, kept in memory: see the module notes)."""
        return self.put_many([(topic, payload)])[0]

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> list[int]:
        """Append several (topic, payload) items with one commit and one fsync; return ids."""
        with self._lock:
            self._check_open()
            now = self.now()
            new = []
            for topic, payload in items:
                new.append(_Item(self._next_id, now, str(topic), bytes(payload)))
                self._next_id += 1
            self._spill.extend(new)
            self._spill_bytes += sum(len(i.payload) for i in new)
            self._flush_locked(force=True)
            self._evict_locked(now)
        return [i.id for i in new]

    def ack(self, item_id: int) -> None:
        """Delete one delivered item (unknown or already evicted ids are ignored)."""
        self.ack_many((item_id,))

    def ack_many(self, item_ids: Iterable[int]) -> int:
        """Delete several delivered items; return how many were removed."""
        ids = {int(i) for i in item_ids}
        if not ids:
            return 0
        with self._lock:
            self._check_open()
            removed = self._drop_spilled(ids)
            on_disk = self._stored(ids - self._unacked)
            self._unacked |= on_disk
            self._flush_locked(force=True)
        return removed + len(on_disk)

    # -- reads -------------------------------------------------------------------------------
    def pending(self, limit: int = 100, *, after: int = 0) -> list[tuple[int, str, bytes]]:
        """Oldest items first (stored rows, then spilled ones), evicting expired ones first.

        Parameters
        ----------
        limit : int
            Most items returned.
        after : int, optional
            Only items with an id greater than this (a sender's cursor).

        Returns
        -------
        list of (id, topic, payload)
        """
        with self._lock:
            self._check_open()
            self._flush_locked(force=False)
            self._evict_locked(self.now())
            rows = self._db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (int(after), int(limit) + len(self._unacked)),
            ).fetchall()
            out = [(int(i), str(t), bytes(p)) for i, t, p in rows if i not in self._unacked]
            out += [(i.id, i.topic, i.payload) for i in self._spill if i.id > after]
        return out[:limit]

    def now(self) -> float:
        """The outbox clock (s): monotonic, continued across restarts."""
        return self._base + (self._clock() - self._clock0)

    def depth(self) -> int:
        """Items stored or spilled and not yet acknowledged or evicted."""
        with self._lock:
            return self._depth - len(self._unacked) + len(self._spill)

    def spilled(self) -> int:
        """Items held in memory because the disk refused them."""
        with self._lock:
            return len(self._spill)

    def max_id(self) -> int:
        """Highest id handed out so far by this database (0 if none)."""
        with self._lock:
            self._check_open()
            return max(self._max_id_on_disk(), self._next_id - 1)

    def close(self) -> None:
        """Try once more to store spilled items, checkpoint and close the database, then
        release the process lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._flush_locked(force=True)
            self._closed = True
            self._db.close()
            os.close(self._lock_fd)
        if self._spill:
            log.error("outbox closed with %d items only in memory (disk refused them) "
                      "errors=%s", len(self._spill), self.errors)
        log.info("outbox closed path=%s evicted=%d", self.path, self.evicted)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _flush_locked(self, *, force: bool) -> None:
        """Write the spill and the pending deletes in one transaction; on failure keep them
        (counted, logged) for the next try. ``force=False`` retries at most every RETRY_S."""
        if not self._spill and not self._unacked:
            return
        if not force and self._clock() < self._retry_at:
            return
        spill = list(self._spill)
        unacked = sorted(self._unacked)
        try:
            with self._tx(sync="FULL" if spill else "NORMAL"):
                self._db.executemany(
                    "INSERT INTO outbox(id, ts, topic, payload) VALUES (?, ?, ?, ?)",
                    [(i.id, i.ts, i.topic, i.payload) for i in spill])
                self._db.executemany("DELETE FROM outbox WHERE id = ?",
                                     [(i,) for i in unacked])
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc, len(spill))
            return
        self._spill.clear()
        self._spill_bytes = 0
        self._unacked.clear()
        self._retry_at = 0.0

    def _failed(self, exc: BaseException, n_spilled: int) -> None:
        name = error_name(exc)
        self.errors[name] = self.errors.get(name, 0) + 1
        self._retry_at = self._clock() + RETRY_S
        self._rlog.warning(f"write:{name}", "event=outbox_write_failed error=%s detail=%s "
                           "in_memory=%d unwritten_acks=%d", name, exc, n_spilled,
                           len(self._unacked))

    @contextmanager
    def _tx(self, sync: str = "FULL") -> Iterator[None]:
        """One write transaction (caller holds the lock). On an error, roll back if SQLite
        has not already done so, recount, and re-raise the *original* error.

        ``sync="NORMAL"`` skips the fsync of this commit (it reaches the disk with the next
        FULL commit or checkpoint): used for acks, whose loss only means a redelivery.
        """
        if sync != self._sync:
            self._db.execute(f"PRAGMA synchronous={sync}")
            self._sync = sync
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback_quietly()
            raise
        self._recount()

    def _rollback_quietly(self) -> None:
        try:
            if self._db.in_transaction:  # SQLITE_FULL may already have rolled it back
                self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("outbox rollback failed: %s", exc)
        try:
            self._recount()
        except sqlite3.Error as exc:
            log.warning("outbox recount failed: %s", exc)

    def _recount(self) -> None:
        n, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self._depth, self._bytes = int(n), int(size)

    def _stored(self, ids: set[int]) -> set[int]:
        """Those of ``ids`` that are rows of the table (a read: works on a full disk)."""
        if not ids:
            return set()
        rows = self._db.execute(
            "SELECT id FROM outbox WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(ids)),))
        return {int(r[0]) for r in rows}

    def _max_id_on_disk(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return int(row[0]) if row else 0

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"{self.path}: outbox is closed")

    def _drop_spilled(self, ids: set[int]) -> int:
        keep = [i for i in self._spill if i.id not in ids]
        removed = len(self._spill) - len(keep)
        if removed:
            self._spill = deque(keep)
            self._spill_bytes = sum(len(i.payload) for i in keep)
        return removed

    def _evict_locked(self, now: float) -> None:
        """Enforce age, count and byte bounds, oldest first (disk rows, then spill)."""
        n = 0
        cutoff = now - self.max_age_s
        while self._spill and self._spill[0].ts < cutoff:
            n += self._pop_spill()
        n += self._evict_disk(cutoff)
        while self._spill and (self._over_count() or self._over_bytes()):
            n += self._pop_spill()
        if n > 0:
            self.evicted += n
            log.warning("outbox evicted n=%d depth=%d total_evicted=%d", n,
                        self._depth - len(self._unacked) + len(self._spill), self.evicted)

    def _over_count(self) -> bool:
        return self._depth - len(self._unacked) + len(self._spill) > self.max_events

    def _over_bytes(self) -> bool:
        return self._bytes + self._spill_bytes > self.max_bytes

    def _pop_spill(self) -> int:
        item = self._spill.popleft()
        self._spill_bytes -= len(item.payload)
        return 1

    def _evict_disk(self, cutoff: float) -> int:
        """Delete expired and over-bound rows from the table; 0 if the disk refuses."""
        over = max(0, self._depth - len(self._unacked) + len(self._spill) - self.max_events)
        excess = max(0, self._bytes + self._spill_bytes - self.max_bytes)
        if not self._depth or not (over or excess or self._oldest_ts() < cutoff):
            return 0
        ids = self._victims(cutoff, over, excess)
        if not ids:
            return 0
        before = self._depth
        try:
            with self._tx():
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc, len(self._spill))
            return 0
        self._unacked -= set(ids)
        return before - self._depth

    def _oldest_ts(self) -> float:
        row = self._db.execute("SELECT MIN(ts) FROM outbox").fetchone()
        return float(row[0]) if row and row[0] is not None else float("inf")

    def _victims(self, cutoff: float, over: int, excess: int) -> list[int]:
        """Ids of the oldest rows to delete: every expired one, then enough for the count
        and byte bounds."""
        ids: list[int] = []
        freed = 0
        cur = self._db.execute("SELECT id, ts, LENGTH(payload) FROM outbox ORDER BY id")
        for item_id, ts, size in cur:
            if ts >= cutoff and len(ids) >= over and freed >= excess:
                break
            ids.append(int(item_id))
            freed += int(size)
        cur.close()
        return ids


def _take_process_lock(lock_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutboxError(f"{lock_path}: outbox is in use by another process") from None
    return fd
