"""Operator labels on the gateway: the label message (v1, a public contract) and the label book.

The cloud publishes every operator label of an event to the gateway that raised it, on
``fiberwatch/v1/{site}/{gateway}/labels/{key}`` (`edge_agent.topics.label`), QoS1 and
**retained**, one topic per label: a gateway that was offline gets every label when it
subscribes again (``.../labels/+``). Only the cloud may write there (`fiberwatch.deploy.acl`).
The payload is one JSON object::

    {"v": 1, "id": "<event id>:<created ns>", "event_id": "...", "site": "...",
     "gateway": "...", "stream": "das" | "dts", "start_ns": int, "end_ns": int,
     "ch_start": int, "ch_end": int, "label": "anomaly" | "false_alarm" | "maintenance",
     "kind": "leak" | "sand" | ... | "", "created_ns": int, "user": "..."}

``label`` says what the operator saw: a true ``anomaly`` (of ``kind``), a ``false_alarm``, or
``maintenance`` (work on the well, not an anomaly either way). `parse_label` refuses anything
else with a `LabelError` (a ``reason`` code, counted by the caller; the message is dropped).

What the gateway does with them (`LabelBook`, one SQLite file beside the outbox):

* windows inside a labelled ``anomaly`` or ``maintenance`` (time and channel range) are
  excluded: from the threshold history (`LabelBook.excluded_channels`, while the label is
  known) and from federated training (`LabelBook.exclusions`, applied when the ClientApp
  reads the normal buffer: `federation.model.task.load_data`);
* the feature rows of flagged windows are journaled (`LabelBook.record_flagged`, bounded);
  rows inside a ``false_alarm`` label are kept as normal training examples
  (`LabelBook.labelled_rows`), which the next federated round trains on and calibrates
  its thresholds with; at once, the gateway's own thresholds on the labelled channel groups
  rise above the pattern's level (`LabelBook.false_alarm_rows`, `edge_agent.fa_calibration`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import ReasonedError

log = logging.getLogger(__name__)

VERSION = 1
LABELS = ("anomaly", "false_alarm", "maintenance")
EXCLUDING = ("anomaly", "maintenance")  # windows inside these never count as normal
MAX_PAYLOAD = 4096
MAX_TEXT = 128
_INT_MAX = 2**63 - 1
_FIELDS = {"v": int, "id": str, "event_id": str, "site": str, "gateway": str, "stream": str,
           "start_ns": int, "end_ns": int, "ch_start": int, "ch_end": int, "label": str,
           "kind": str, "created_ns": int, "user": str}


class LabelError(ReasonedError):
    """A label message refused (reasons: ``too_large``, ``not_json``, ``bad_field``,
    ``bad_range``, ``wrong_gateway``, ``version``)."""


@dataclass(frozen=True)
class Label:
    """One operator label, as published (see the module docstring)."""

    id: str
    event_id: str
    site: str
    gateway: str
    stream: str
    start_ns: int
    end_ns: int
    ch_start: int
    ch_end: int
    label: str
    kind: str = ""
    created_ns: int = 0
    user: str = ""
    v: int = VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @property
    def key(self) -> str:
        """The topic level of this label: a hash of its id (ids may hold any printable text)."""
        return hashlib.sha256(self.id.encode()).hexdigest()[:24]


def parse_label(payload: bytes, *, site: str | None = None,
                gateway: str | None = None) -> Label:
    """The `Label` in ``payload``; `LabelError` for anything else. With ``site``/``gateway``,
    a label for another gateway is refused (``wrong_gateway``)."""
    if len(payload) > MAX_PAYLOAD:
        raise LabelError("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD}")
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise LabelError("not_json", str(exc)[:200]) from None
    if not isinstance(doc, dict):
        raise LabelError("not_json", "not a JSON object")
    for name, typ in _FIELDS.items():
        v = doc.get(name)
        if not isinstance(v, typ) or isinstance(v, bool):
            raise LabelError("bad_field", f"{name}: expected {typ.__name__}, got {v!r:.60}")
        if isinstance(v, str) and len(v) > MAX_TEXT:
            raise LabelError("bad_field", f"{name}: longer than {MAX_TEXT}")
        if isinstance(v, int) and not 0 <= v <= _INT_MAX:
            raise LabelError("bad_field", f"{name}: {v} out of range")
    if doc["v"] != VERSION:
        raise LabelError("version", f"label version {doc['v']}, this gateway reads {VERSION}")
    if doc["label"] not in LABELS:
        raise LabelError("bad_field", f"label {doc['label']!r:.40} not in {LABELS}")
    if doc["end_ns"] < doc["start_ns"] or doc["ch_end"] < doc["ch_start"]:
        raise LabelError("bad_range", "end before start (time or channels)")
    if (site, gateway) != (None, None) and (doc["site"], doc["gateway"]) != (site, gateway):
        raise LabelError("wrong_gateway", f"label for {doc['site']}/{doc['gateway']:.64}")
    return Label(**{k: doc[k] for k in _FIELDS})


_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id TEXT PRIMARY KEY, stream TEXT NOT NULL, label TEXT NOT NULL, kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, ch_start INTEGER NOT NULL,
    ch_end INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS flagged (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, t_start_ns INTEGER NOT NULL,
    t_end_ns INTEGER NOT NULL, channel INTEGER NOT NULL, row BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS flagged_t ON flagged (stream, t_start_ns);
"""


class LabelBook:
    """The gateway's labels and its journal of flagged rows (SQLite, thread-safe).

    ``max_flagged`` bounds the journal (oldest rows dropped first); rows inside a false-alarm
    label are never dropped while the label is kept."""

    def __init__(self, path: Path, *, max_flagged: int = 200_000) -> None:
        self.path, self.max_flagged = Path(path), max_flagged
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.refused: dict[str, int] = {}
        self.revision = 0  # +1 per label stored (`edge_agent.fa_calibration` recomputes)
        self._cache: list[Label] = self._load()

    def _load(self) -> list[Label]:
        rows = self._db.execute("SELECT doc FROM labels").fetchall()
        return [parse_label(r[0].encode()) for r in rows]

    @classmethod
    def open_readonly(cls, path: Path) -> LabelBook:
        """For the ClientApp (another process): reads only."""
        return cls(path)

    def handle(self, payload: bytes, *, site: str, gateway: str) -> Label | None:
        """A label message from the broker: stored, or refused and counted (never raises)."""
        try:
            label = parse_label(payload, site=site, gateway=gateway)
        except LabelError as exc:
            self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
            log.warning("event=label_refused reason=%s detail=%s", exc.reason, exc.detail[:120])
            return None
        self.add(label)
        return label

    def add(self, label: Label) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO labels VALUES (?,?,?,?,?,?,?,?,?)",
                (label.id, label.stream, label.label, label.kind, label.start_ns, label.end_ns,
                 label.ch_start, label.ch_end, label.to_json().decode()))
            self._cache = [lb for lb in self._cache if lb.id != label.id] + [label]
            self.revision += 1
        log.info("event=label_stored id=%s label=%s kind=%s", label.id, label.label, label.kind)

    def labels(self) -> list[Label]:
        with self._lock:
            return list(self._cache)

    def exclusions(self, stream: str) -> list[tuple[int, int, int, int]]:
        """``(start_ns, end_ns, ch_start, ch_end)`` of every anomaly/maintenance label."""
        return [(lb.start_ns, lb.end_ns, lb.ch_start, lb.ch_end) for lb in self.labels()
                if lb.stream == stream and lb.label in EXCLUDING]

    def excluded_channels(self, stream: str, t_start_ns: int, t_end_ns: int,
                          first_channel: int, n_channels: int) -> np.ndarray | None:
        """bool ``(n_channels,)`` of the channels a window shares with an excluding label,
        or None when it shares none (the common case: no allocation)."""
        out = None
        for s, e, c0, c1 in self.exclusions(stream):
            if s < t_end_ns and e > t_start_ns:
                lo, hi = max(c0 - first_channel, 0), min(c1 - first_channel, n_channels - 1)
                if hi >= lo:
                    out = np.zeros(n_channels, bool) if out is None else out
                    out[lo:hi + 1] = True
        return out

    def record_flagged(self, stream: str, t_start_ns: int, t_end_ns: int,
                       channels: np.ndarray, rows: np.ndarray) -> None:
        """Journal the feature rows of a flagged window (``channels``: absolute numbers)."""
        data = [(stream, int(t_start_ns), int(t_end_ns), int(c), np.asarray(r, "<f4").tobytes())
                for c, r in zip(channels, rows, strict=True)]
        with self._lock:
            self._db.executemany("INSERT INTO flagged (stream, t_start_ns, t_end_ns, channel, row)"
                                 " VALUES (?,?,?,?,?)", data)
            n = self._db.execute("SELECT COALESCE(MAX(seq) - MIN(seq) + 1, 0) FROM flagged"
                                 ).fetchone()[0]
            if n > self.max_flagged * 1.1:
                self._trim()

    def _trim(self) -> None:
        keep = [lb for lb in self._cache if lb.label == "false_alarm"]
        cut = self._db.execute("SELECT MAX(seq) FROM flagged").fetchone()[0] - self.max_flagged
        cond = " AND ".join(["seq <= ?"] + ["NOT (t_start_ns < ? AND t_end_ns > ? AND channel "
                                            "BETWEEN ? AND ?)"] * len(keep))
        args: list[Any] = [cut]
        for lb in keep:
            args += [lb.end_ns, lb.start_ns, lb.ch_start, lb.ch_end]
        self._db.execute(f"DELETE FROM flagged WHERE {cond}", args)  # noqa: S608 - fixed text

    def labelled_rows(self, stream: str, dim: int, label: str = "false_alarm"
                      ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        """``(rows (N, dim) float32, window start ns (N,), kinds, label index (N,))``
        journaled inside the ``label`` labels of ``stream``, labels in time order (false
        alarms: normal examples the operator pointed out; anomalies: what the model must
        keep flagging, with their kind)."""
        found: dict[int, tuple[int, bytes, str, int]] = {}  # by journal seq: labels overlap
        mine = sorted((lb for lb in self.labels() if lb.stream == stream and lb.label == label),
                      key=lambda lb: (lb.start_ns, lb.id))
        for i, lb in enumerate(mine):
            with self._lock:
                got = self._db.execute(
                    "SELECT seq, t_start_ns, row FROM flagged WHERE stream=? AND t_start_ns < ?"
                    " AND t_end_ns > ? AND channel BETWEEN ? AND ?",
                    (stream, lb.end_ns, lb.start_ns, lb.ch_start, lb.ch_end)).fetchall()
            found.update({int(q): (int(t), bytes(r), lb.kind, i) for q, t, r in got
                          if len(r) == 4 * dim and int(q) not in found})
        picked = [found[q] for q in sorted(found)]
        rows = np.frombuffer(b"".join(p[1] for p in picked), "<f4").reshape(-1, dim)
        return (rows.astype(np.float32), np.asarray([p[0] for p in picked], np.int64),
                [p[2] for p in picked], np.asarray([p[3] for p in picked], np.int64))

    def false_alarm_rows(self, stream: str, dim: int, *, max_rows: int = 20_000
                         ) -> tuple[np.ndarray, np.ndarray]:
        """``(rows (N, dim) float32, channels (N,) int64)`` journaled inside the
        ``false_alarm`` labels of ``stream``, newest labels first, at most ``max_rows``
        (threshold calibration: `edge_agent.fa_calibration`)."""
        mine = sorted((lb for lb in self.labels() if lb.stream == stream
                       and lb.label == "false_alarm"), key=lambda lb: -lb.start_ns)
        seen: set[int] = set()
        rows: list[bytes] = []
        chans: list[int] = []
        for lb in mine:
            with self._lock:
                got = self._db.execute(
                    "SELECT seq, channel, row FROM flagged WHERE stream=? AND t_start_ns < ?"
                    " AND t_end_ns > ? AND channel BETWEEN ? AND ? ORDER BY seq DESC LIMIT ?",
                    (stream, lb.end_ns, lb.start_ns, lb.ch_start, lb.ch_end,
                     max_rows)).fetchall()
            for q, c, r in got:
                if len(r) == 4 * dim and int(q) not in seen and len(rows) < max_rows:
                    seen.add(int(q))
                    rows.append(bytes(r))
                    chans.append(int(c))
        data = np.frombuffer(b"".join(rows), "<f4").reshape(-1, dim).astype(np.float32)
        return data, np.asarray(chans, np.int64)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> LabelBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
