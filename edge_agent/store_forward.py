"""Durable outbox: what the gateway must deliver, on disk until the broker acknowledges it.

One SQLite table in WAL mode. `Outbox.put` commits with ``synchronous=FULL``: it returns only
after the row is committed and the WAL is fsynced, so an item survives a process kill *and* a
power loss (`Outbox.put_many`: several rows, one fsync). Acks commit with
``synchronous=NORMAL`` (no fsync of their own; they reach the disk with the next put or
checkpoint): a power loss can undo recent acks, which only means those items are sent again
(at-least-once either way). Rows leave the table only through an ack or eviction.

Bounds: at most ``max_events`` rows and nothing older than ``max_age_s`` (by the injected
``clock`` at `put` time); the oldest rows are evicted first. `Outbox.evicted` counts evictions
**per process** (it starts at 0 on every open); the table itself is the only thing on disk.

Ids come from ``AUTOINCREMENT``: strictly increasing, never reused, even after every row has
been acknowledged, so a stale acknowledgement can never delete a newer item.

One process owns an outbox at a time: opening takes an exclusive ``flock`` on
``<path>.lock`` (released by the kernel when the owner dies, even by SIGKILL) and a second
opener gets `OutboxError`. Within the process, every method is thread-safe.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      REAL NOT NULL,
    topic   TEXT NOT NULL,
    payload BLOB NOT NULL
)
"""


class OutboxError(RuntimeError):
    """The outbox cannot be opened (locked by another process, or not a valid database)."""


class Outbox:
    """Bounded, durable FIFO of (topic, payload) items awaiting a broker acknowledgement.

    Parameters
    ----------
    path : Path
        SQLite database file; created with its folder if missing.
    max_events : int
        Most rows kept; a `put` beyond it evicts the oldest rows.
    max_age_s : float
        Rows older than this (by ``clock``) are evicted on `put` and `pending`.
    clock : callable, optional
        Wall-clock seconds, injectable for tests (default `time.time`).

    Attributes
    ----------
    evicted : int
        Rows evicted (by size or age) since this object was opened: per process, not persisted.
    """

    def __init__(
        self, path: Path, *, max_events: int, max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_events < 1 or max_age_s <= 0:
            raise ValueError("max_events must be >= 1 and max_age_s > 0")
        self.path = Path(path)
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.evicted = 0
        self._clock = clock
        self._lock = threading.Lock()
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
            self._depth = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            os.close(self._lock_fd)
            raise OutboxError(f"{self.path}: {exc}") from exc
        self._closed = False
        log.info("outbox opened path=%s depth=%d", self.path, self._depth)

    # -- writes ------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes) -> int:
        """Append one item; return its id once it is committed and fsynced.

        Parameters
        ----------
        topic : str
            MQTT topic to publish on.
        payload : bytes
            Message body.

        Returns
        -------
        int
            The item id (strictly increasing, never reused).
        """
        return self.put_many([(topic, payload)])[0]

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> list[int]:
        """Append several (topic, payload) items with one commit and one fsync; return ids."""
        now = self._clock()
        ids: list[int] = []
        with self._tx():
            for topic, payload in items:
                cur = self._db.execute(
                    "INSERT INTO outbox(ts, topic, payload) VALUES (?, ?, ?)",
                    (now, topic, bytes(payload)),
                )
                ids.append(int(cur.lastrowid or 0))
            self._depth += len(ids)
            self._evict_locked(now)
        return ids

    def ack(self, item_id: int) -> None:
        """Delete one delivered item (unknown or already evicted ids are ignored)."""
        self.ack_many((item_id,))

    def ack_many(self, item_ids: Iterable[int]) -> int:
        """Delete several delivered items in one transaction; return how many were removed."""
        ids = [(int(i),) for i in item_ids]
        if not ids:
            return 0
        with self._tx(sync="NORMAL"):
            before = self._db.total_changes
            self._db.executemany("DELETE FROM outbox WHERE id = ?", ids)
            removed = self._db.total_changes - before
            self._depth -= removed
        return removed

    # -- reads -------------------------------------------------------------------------------
    def pending(self, limit: int = 100, *, after: int = 0) -> list[tuple[int, str, bytes]]:
        """Oldest items first, evicting expired ones first.

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
        with self._tx():
            self._evict_locked(self._clock())
            rows = self._db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (int(after), int(limit)),
            ).fetchall()
        return [(int(i), str(t), bytes(p)) for i, t, p in rows]

    def depth(self) -> int:
        """Items stored and not yet acknowledged or evicted."""
        with self._lock:
            return self._depth

    def max_id(self) -> int:
        """Highest id handed out so far by this database (0 if none)."""
        with self._lock:
            self._check_open()
            row = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"
            ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Checkpoint and close the database, then release the process lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            os.close(self._lock_fd)
        log.info("outbox closed path=%s evicted=%d", self.path, self.evicted)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    @contextmanager
    def _tx(self, sync: str = "FULL") -> Iterator[None]:
        """Hold the lock for one write transaction; on error roll back and recount.

        ``sync="NORMAL"`` skips the fsync of this commit (it reaches the disk with the next
        FULL commit or checkpoint): used for acks, whose loss only means a redelivery.
        """
        with self._lock:
            self._check_open()
            if sync != self._sync:
                self._db.execute(f"PRAGMA synchronous={sync}")
                self._sync = sync
            self._db.execute("BEGIN IMMEDIATE")
            committed = False
            try:
                yield
                self._db.execute("COMMIT")
                committed = True
            finally:
                if not committed:
                    self._db.execute("ROLLBACK")
                    self._depth = int(
                        self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                    )

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"{self.path}: outbox is closed")

    def _evict_locked(self, now: float) -> None:
        n = self._db.execute("DELETE FROM outbox WHERE ts < ?", (now - self.max_age_s,)).rowcount
        over = self._depth - n - self.max_events
        if over > 0:
            n += self._db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                (over,),
            ).rowcount
        if n > 0:
            self._depth -= n
            self.evicted += n
            log.warning("outbox evicted n=%d depth=%d total_evicted=%d", n, self._depth,
                        self.evicted)


def _take_process_lock(lock_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutboxError(f"{lock_path}: outbox is in use by another process") from None
    return fd
