"""The bridge's durable position: which files it has published, and how far each stream got.

One SQLite file (WAL, ``synchronous=FULL``: a commit survives SIGKILL and power loss)::

    files(name, stream, size, mtime_ns, status, seq0, frames_total, frames_done,
          t0_ns, end_ns, error, meta, updated_ns)
    streams(stream, next_seq, end_ns)

A file is *claimed* (status ``publishing``, its sequence numbers reserved and the stream's
position moved past it) in one transaction before its first frame leaves; `progress` commits
how many frames went out every few frames; `done` marks it ``published``. After a crash the
claimed file is resumed from its last committed frame with the same sequence numbers, so a
frame is re-sent at most once per crash, byte-identical, and the agent drops it as a
duplicate; no file is published twice and none is skipped. A refused file is ``error``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    name TEXT PRIMARY KEY, stream TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, status TEXT NOT NULL, seq0 INTEGER NOT NULL DEFAULT 0,
    frames_total INTEGER NOT NULL DEFAULT 0, frames_done INTEGER NOT NULL DEFAULT 0,
    t0_ns INTEGER, end_ns INTEGER, error TEXT, meta TEXT, updated_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY, next_seq INTEGER NOT NULL, end_ns INTEGER);
"""


class StateError(RuntimeError):
    """The state file cannot be opened or is not ours."""


@dataclass(frozen=True, slots=True)
class FileRecord:
    name: str
    stream: str
    size: int
    mtime_ns: int
    status: str  # publishing | published | error
    seq0: int
    frames_total: int
    frames_done: int
    error: str | None


class State:
    """The SQLite position file; one writer (the bridge process)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"{self.path}: cannot open the bridge state: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def file(self, name: str) -> FileRecord | None:
        row = self._db.execute(
            "SELECT name, stream, size, mtime_ns, status, seq0, frames_total, frames_done, "
            "error FROM files WHERE name = ?", (name,)).fetchone()
        return FileRecord(*row) if row else None

    def known(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT name FROM files")}

    def unfinished(self) -> list[FileRecord]:
        rows = self._db.execute(
            "SELECT name, stream, size, mtime_ns, status, seq0, frames_total, frames_done, "
            "error FROM files WHERE status = 'publishing' ORDER BY name").fetchall()
        return [FileRecord(*r) for r in rows]

    def stream(self, stream: str) -> tuple[int, int | None]:
        """``(next_seq, end_ns)`` of a stream; ``(0, None)`` before its first file."""
        row = self._db.execute("SELECT next_seq, end_ns FROM streams WHERE stream = ?",
                               (stream,)).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    def claim(self, name: str, stream: str, size: int, mtime_ns: int, seq0: int,
              frames_total: int, next_seq: int, t0_ns: int, end_ns: int,
              meta: dict[str, Any]) -> None:
        """Reserve a file's sequence numbers and move the stream past it, atomically."""
        with self._tx():
            self._db.execute(
                "INSERT INTO files (name, stream, size, mtime_ns, status, seq0, frames_total, "
                "frames_done, t0_ns, end_ns, meta, updated_ns) VALUES "
                "(?, ?, ?, ?, 'publishing', ?, ?, 0, ?, ?, ?, ?)",
                (name, stream, size, mtime_ns, seq0, frames_total, t0_ns, end_ns,
                 json.dumps(meta, default=str), time.time_ns()))
            self._db.execute(
                "INSERT INTO streams (stream, next_seq, end_ns) VALUES (?, ?, ?) "
                "ON CONFLICT(stream) DO UPDATE SET next_seq = excluded.next_seq, "
                "end_ns = excluded.end_ns", (stream, next_seq, end_ns))

    def progress(self, name: str, frames_done: int) -> None:
        self._db.execute("UPDATE files SET frames_done = ?, updated_ns = ? WHERE name = ?",
                         (frames_done, time.time_ns(), name))

    def done(self, name: str) -> None:
        self._db.execute("UPDATE files SET status = 'published', frames_done = frames_total, "
                         "updated_ns = ? WHERE name = ?", (time.time_ns(), name))

    def error(self, name: str, stream: str, size: int, mtime_ns: int, reason: str) -> None:
        """Record a refused file (not retried; its sequence numbers are not reserved)."""
        self._db.execute(
            "INSERT INTO files (name, stream, size, mtime_ns, status, error, updated_ns) "
            "VALUES (?, ?, ?, ?, 'error', ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "status = 'error', error = excluded.error, updated_ns = excluded.updated_ns",
            (name, stream, size, mtime_ns, reason, time.time_ns()))

    def counts(self) -> dict[str, int]:
        return {s: n for s, n in self._db.execute(
            "SELECT status, COUNT(*) FROM files GROUP BY status")}

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, et: object, e: object, tb: object) -> None:
        self._db.execute("COMMIT" if et is None else "ROLLBACK")
