"""`AlertState`: alerts, the delivery queue and the audit trail, in one SQLite file.

Shared by the alerting process (which fires alerts and delivers the queue) and the API
(which lists alerts and the audit trail and acknowledges/resolves). WAL mode lets both open
the file at once; every change is one transaction, so a crash never leaves an alert fired
without its queued notifications, and a queued notification is deleted only once delivered
(at-least-once: a receiver that is down keeps its messages queued across restarts).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATUSES = ("firing", "acknowledged", "resolved")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    event_id TEXT PRIMARY KEY, rule TEXT NOT NULL, receivers TEXT NOT NULL,
    site TEXT NOT NULL, gateway TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
    status TEXT NOT NULL, event TEXT NOT NULL, fired_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL, notifications INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS alerts_updated ON alerts(updated_ns);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, receiver TEXT NOT NULL, event_id TEXT NOT NULL,
    status TEXT NOT NULL, payload TEXT NOT NULL, event_ns INTEGER NOT NULL,
    created_ns INTEGER NOT NULL, next_ns INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(receiver, id);
CREATE TABLE IF NOT EXISTS delivered (
    id INTEGER PRIMARY KEY, receiver TEXT NOT NULL, event_id TEXT NOT NULL,
    status TEXT NOT NULL, event_ns INTEGER NOT NULL, created_ns INTEGER NOT NULL,
    delivered_ns INTEGER NOT NULL, attempts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, t_ns INTEGER NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, event_id TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS audit_event ON audit(event_id);
"""
_ACTIONS = {"acknowledged": "acknowledge", "resolved": "resolve"}
DELIVERED_KEEP = 10_000  # rows of delivery history kept (latency figures)


class AlertNotFound(LookupError):
    """No alert for this event id."""


class AlertConflict(ValueError):
    """The transition is not allowed from the alert's current status."""


@dataclass(frozen=True, slots=True)
class Queued:
    id: int
    receiver: str
    event_id: str
    status: str
    payload: dict[str, Any]
    event_ns: int
    attempts: int
    next_ns: int


class AlertState:
    """One SQLite connection guarded by a lock (use one instance per process)."""

    def __init__(self, path: Path | str, *, clock: Any = time.time_ns) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0,
                                   isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def now(self) -> int:
        return int(self._clock())

    # --- alerts ---------------------------------------------------------------------------

    def alert(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM alerts WHERE event_id = ?",
                                   (event_id,)).fetchone()
        return _alert(row) if row else None

    def alerts(self, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Alerts, most recently changed first."""
        q, args = "SELECT * FROM alerts", []
        if status is not None:
            q, args = q + " WHERE status = ?", [status]
        with self._lock:
            rows = self._db.execute(q + " ORDER BY updated_ns DESC LIMIT ?",
                                    [*args, int(limit)]).fetchall()
        return [_alert(r) for r in rows]

    def fire(self, alert: dict[str, Any], notes: list[tuple[str, dict[str, Any]]], *,
             action: str, detail: str = "") -> None:
        """Insert or update `alert` and queue `notes` ((receiver, payload)) atomically."""
        now = self.now()
        with self._tx() as db:
            db.execute(
                "INSERT INTO alerts (event_id, rule, receivers, site, gateway, kind, severity, "
                "status, event, fired_ns, updated_ns, notifications) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(event_id) DO UPDATE SET "
                "severity=excluded.severity, kind=excluded.kind, event=excluded.event, "
                "updated_ns=excluded.updated_ns, notifications=notifications+?",
                (alert["event_id"], alert["rule"], json.dumps(alert["receivers"]),
                 alert["site"], alert["gateway"], alert["kind"], alert["severity"],
                 alert["status"], json.dumps(alert["event"]), now, now, len(notes), len(notes)))
            self._queue(db, alert, notes, now, status="firing")
            self._audit(db, now, "system", action, alert["event_id"], detail)

    def transition(self, event_id: str, to: str, *, actor: str, note: str = "",
                   notes: list[tuple[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
        """Acknowledge or resolve an alert as `actor`; queue `notes` (e.g. 'resolved')."""
        allowed = {"acknowledged": ("firing",), "resolved": ("firing", "acknowledged")}[to]
        now = self.now()
        with self._tx() as db:
            row = db.execute("SELECT * FROM alerts WHERE event_id = ?", (event_id,)).fetchone()
            if row is None:
                raise AlertNotFound(f"no alert for event {event_id!r}")
            if row["status"] not in allowed:
                raise AlertConflict(f"alert is {row['status']}: cannot set it {to}")
            db.execute("UPDATE alerts SET status = ?, updated_ns = ? WHERE event_id = ?",
                       (to, now, event_id))
            alert = _alert(row)
            self._queue(db, alert, notes or [], now, status=to)
            self._audit(db, now, actor, _ACTIONS[to], event_id, note)
        return self.alert(event_id) or alert

    def audit(self, *, event_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Who did what, newest first."""
        q, args = "SELECT * FROM audit", []
        if event_id is not None:
            q, args = q + " WHERE event_id = ?", [event_id]
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id DESC LIMIT ?", [*args, int(limit)])
            return [dict(r) for r in rows.fetchall()]

    def record(self, actor: str, action: str, event_id: str, detail: str = "") -> None:
        """An audit entry on its own (e.g. a delivery given up or a config change)."""
        with self._tx() as db:
            self._audit(db, self.now(), actor, action, event_id, detail)

    @staticmethod
    def _audit(db: sqlite3.Connection, now: int, actor: str, action: str, event_id: str,
               detail: str) -> None:
        db.execute("INSERT INTO audit (t_ns, actor, action, event_id, detail) VALUES (?,?,?,?,?)",
                   (now, actor, action, event_id, detail[:2000]))

    @staticmethod
    def _queue(db: sqlite3.Connection, alert: dict[str, Any],
               notes: list[tuple[str, dict[str, Any]]], now: int, *, status: str) -> None:
        event_ns = int(alert["event"].get("received_ns") or alert["event"].get("detected_ns")
                       or now)
        for receiver, payload in notes:
            db.execute("INSERT INTO outbox (receiver, event_id, status, payload, event_ns, "
                       "created_ns, next_ns) VALUES (?,?,?,?,?,?,?)",
                       (receiver, alert["event_id"], status, json.dumps(payload), event_ns,
                        now, now))

    # --- the delivery queue ---------------------------------------------------------------

    def due(self, limit: int = 100) -> list[Queued]:
        """Queued notifications in order; each receiver's are in the order they were queued."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM outbox ORDER BY id LIMIT ?",
                                    (int(limit),)).fetchall()
        return [Queued(r["id"], r["receiver"], r["event_id"], r["status"],
                       json.loads(r["payload"]), r["event_ns"], r["attempts"], r["next_ns"])
                for r in rows]

    def next_due_ns(self, receiver: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_ns) FROM outbox WHERE receiver = ?",
                                   (receiver,)).fetchone()
        return int(row[0] or 0)

    def delivered(self, item: Queued) -> None:
        now = self.now()
        with self._tx() as db:
            row = db.execute("SELECT created_ns FROM outbox WHERE id = ?", (item.id,)).fetchone()
            db.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
            db.execute("INSERT OR REPLACE INTO delivered (id, receiver, event_id, status, "
                       "event_ns, created_ns, delivered_ns, attempts) VALUES (?,?,?,?,?,?,?,?)",
                       (item.id, item.receiver, item.event_id, item.status, item.event_ns,
                        row[0] if row else now, now, item.attempts + 1))
            db.execute("DELETE FROM delivered WHERE id <= (SELECT MAX(id) FROM delivered) - ?",
                       (DELIVERED_KEEP,))

    def failed(self, item: Queued, error: str, retry_in_s: float) -> None:
        now = self.now()
        with self._tx() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_ns = ? "
                       "WHERE id = ?", (error[:500], now + int(retry_in_s * 1e9), item.id))

    def queue_depth(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT receiver, COUNT(*) FROM outbox GROUP BY receiver")
            return {r[0]: int(r[1]) for r in rows.fetchall()}

    def deliveries(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Recent deliveries (newest first) with their event and queue times (latency)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM delivered ORDER BY id DESC LIMIT ?",
                                    (int(limit),)).fetchall()
        return [dict(r) for r in rows]


def _alert(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["receivers"] = json.loads(d["receivers"])
    d["event"] = json.loads(d["event"])
    return d
