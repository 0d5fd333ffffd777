# ruff: noqa: S608 - InfluxQL here is built from quote_ident/quote_literal/int()/float() only
"""The read layer the HTTP API calls: events, labels, waterfalls, fleet and federated rounds.

Every method returns plain dicts and lists that serialise to JSON as they are; times are
integer ns since the epoch. Bad arguments raise ValueError with a reason; InfluxDB failures
raise `cloud.influx.InfluxError` (``retryable`` for an unreachable server).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import fields as dc_fields
from typing import Any

from cloud import codec, schema, window
from cloud.influx import InfluxClient, InfluxError, float_literal, quote_ident, quote_literal
from cloud.window import Row
from edge_agent import topics
from edge_agent.events import OPTIONAL, STREAMS, Event

log = logging.getLogger(__name__)
_EVENT_TYPES = {f.name: {"int": int, "float": float}.get(str(f.type), str)
                for f in dc_fields(Event)}
_FLEET_KEYS = ("site", "gateway", "last_seen_ns", "status", "model_version", "model_hash",
               "frames_per_s", "samples_per_s", "outbox_depth", "drops_total", "gaps",
               "latency_p99_ms", "rss_mb")
_FLEET_EXTRA = ("t_ns", "uptime_s", "queue_depth", "outbox_evicted", "latency_p50_ms",
                "model_status", "model_state_ns", *codec.HEALTH_OPTIONAL_INTS)
WINDOW_FIELDS = ("score", "energy", "threshold")
MAX_EVENT_NS = 7 * 86400 * 10**9  # a search from `start` finds events begun this long before
MAX_CELLS = 20_000_000  # grid rows x columns of one window (~0.5 GB as Python lists)
_HISTORY_FROM_STEP_NS = 5 * window.NS  # coarser buckets than this read the 10 s history
_NOT_YET = re.compile(r"(database|retention policy) not found")
_TAIL_NS = 60 * window.NS  # at most this much of a history window's end is read from raw


class UnknownEvent(LookupError):
    """`Store.add_label` for an event id that is not stored."""


class Store:
    """Read (and label) what ingestion wrote, over the v1 API.

    Parameters
    ----------
    influx : InfluxClient
        Shared, thread-safe client.
    db : str
        Database name (`cloud.schema.DB`).
    """

    def __init__(self, influx: InfluxClient, db: str = schema.DB) -> None:
        self.influx = influx
        self.db = db
        self._lock = threading.Lock()
        self._last_label_ns = 0
        self._raw_s: tuple[float, int] | None = None  # (fetched at, raw retention seconds)

    def _rows(self, q: str) -> list[dict[str, Any]]:
        """Rows of `q`; none (not an error) before ingestion has created the schema."""
        try:
            return self.influx.rows(q)
        except InfluxError as exc:
            if not exc.retryable and _NOT_YET.search(str(exc)):
                return []
            raise

    def _from(self, rp: str, measurement: str) -> str:
        return ".".join(quote_ident(x) for x in (self.db, rp, measurement))

    # --- events and labels ----------------------------------------------------------------

    def anomalies(self, *, site: str | None = None, gateway: str | None = None,
                  stream: str | None = None, start_ns: int | None = None,
                  end_ns: int | None = None, ch_min: int | None = None, ch_max: int | None = None,
                  dist_min: float | None = None, dist_max: float | None = None,
                  severity: str | None = None, class_hint: str | None = None,
                  model_version: str | None = None, limit: int = 100,
                  offset: int = 0) -> list[dict[str, Any]]:
        """Events, newest first (by start), each with its ``labels``.

        Time, channel and distance filters select events overlapping the given range
        (``start_ns <= event.end_ns`` and ``event.start_ns <= end_ns``; likewise for
        channels; distances in either direction along the fiber).
        """
        if not 1 <= limit <= 10_000 or offset < 0:
            raise ValueError("limit must be 1..10000 and offset >= 0")
        conds = [f"{quote_ident(k)} = {quote_literal(v)}" for k, v in (
            ("site", site), ("gateway", gateway), ("stream", stream), ("severity", severity),
            ("class_hint", class_hint), ("model_version", model_version)) if v is not None]
        if end_ns is not None:
            conds.append(f"time <= {int(end_ns)}")
        if start_ns is not None:  # time = the event's start: bounds the scan too
            conds.append(f'"end_ns" >= {int(start_ns)}')
            conds.append(f"time >= {max(0, int(start_ns) - MAX_EVENT_NS)}")
        if ch_min is not None:
            conds.append(f'"ch_end" >= {int(ch_min)}')
        if ch_max is not None:
            conds.append(f'"ch_start" <= {int(ch_max)}')
        if dist_min is not None:
            d = float_literal(dist_min)
            conds.append(f'("dist_start_m" >= {d} OR "dist_end_m" >= {d})')
        if dist_max is not None:
            d = float_literal(dist_max)
            conds.append(f'("dist_start_m" <= {d} OR "dist_end_m" <= {d})')
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        q = (f"SELECT * FROM {self._from(schema.RP_EVENTS, schema.EVENT)}{where} "
             f"ORDER BY time DESC LIMIT {int(limit)} OFFSET {int(offset)}")
        # withdrawn events (merged into another) are left out: one event per anomaly
        rows = _dedupe([_event(r) for r in self._rows(q)])
        events = [e for e in rows if not e.get("merged_into")]
        labels = self._labels_for([e["id"] for e in events])
        for e in events:
            e["labels"] = labels.get(e["id"], [])
        return events

    def anomaly(self, event_id: str) -> dict[str, Any] | None:
        """One event with its ``labels``, or None."""
        q = (f"SELECT * FROM {self._from(schema.RP_EVENTS, schema.EVENT)} "
             f"WHERE \"id\" = {quote_literal(event_id)} ORDER BY time DESC")
        events = _dedupe([_event(r) for r in self._rows(q)])
        if not events:
            return None
        events[0]["labels"] = self.labels(event_id)
        return events[0]

    def labels(self, event_id: str) -> list[dict[str, Any]]:
        """The operator labels of one event, oldest first."""
        return self._labels_for([event_id]).get(event_id, [])

    def _labels_for(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        if not ids:
            return {}
        cond = " OR ".join(f'"event_id" = {quote_literal(i)}' for i in dict.fromkeys(ids))
        q = f"SELECT * FROM {self._from(schema.RP_EVENTS, schema.LABEL)} WHERE {cond}"
        out: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(self._rows(q), key=lambda r: r["time"]):
            out.setdefault(r["event_id"], []).append(
                {"event_id": r["event_id"], "label": r["label"],
                 "note": codec.note_text(r.get("note")), "user": r.get("user") or "",
                 "time_ns": int(r["time"]), "kind": r.get("kind") or ""})
        return out

    def all_labels(self, since_ns: int = 0) -> list[dict[str, Any]]:
        """Every label stored at or after ``since_ns``, oldest first (`labels` items)."""
        q = (f"SELECT * FROM {self._from(schema.RP_EVENTS, schema.LABEL)} "
             f"WHERE time >= {int(since_ns)}")
        ids = [r["event_id"] for r in self._rows(q)]
        return sorted((lb for v in self._labels_for(ids).values() for lb in v
                       if lb["time_ns"] >= since_ns), key=lambda lb: lb["time_ns"])

    def add_label(self, event_id: str, *, label: str, note: str, user: str,
                  kind: str = "") -> dict[str, Any]:
        """Store an operator label; returns it as `labels` lists it.

        Raises
        ------
        ValueError
            `label` not in confirmed | false_alarm | note, or `note`/`user` too long/empty.
        UnknownEvent
            No event with this id.
        """
        if label not in schema.LABELS:
            raise ValueError(f"label must be one of {schema.LABELS}, got {label!r}")
        if not isinstance(note, str) or len(note) > 2000:
            raise ValueError("note must be a string of at most 2000 characters")
        if not isinstance(user, str) or not user or len(user) > 128:
            raise ValueError("user must be a non-empty string of at most 128 characters")
        if self.anomaly(event_id) is None:
            raise UnknownEvent(f"no event with id {event_id!r}")
        with self._lock:  # distinct times, so two labels of one event never overwrite
            t = self._last_label_ns = max(time.time_ns(), self._last_label_ns + 1)
        line = codec.label_line(event_id, label=label, note=note, user=user, created_ns=t,
                                kind=kind)
        self.influx.write(self.db, [line], rp=schema.RP_EVENTS)
        return {"event_id": event_id, "label": label, "note": note, "user": user, "time_ns": t,
                "kind": kind}

    # --- fleet and rounds -----------------------------------------------------------------

    def fleet(self) -> list[dict[str, Any]]:
        """The latest health (and model state) of every gateway ever seen.

        ``latency_p99_ms``/``latency_p50_ms`` cover all of a gateway's frames;
        ``latency_p99_ms_by_stream``/``latency_p50_ms_by_stream`` ({stream: ms}) each stream's
        alone, ``{}`` if the gateway's agent does not report them. ``fa_mutes_active``,
        ``fa_muted_windows`` and ``fa_muted_groups`` (labelled false alarms muting flags,
        `edge_agent.summary.HEALTH_OPTIONAL_KEYS`) are None from agents that do not report them.
        """
        q = f'SELECT * FROM {self._from(schema.RP_EVENTS, schema.FLEET)} GROUP BY "site","gateway"'
        out = []
        for r in self._rows(q):
            g = {k: r.get(k) for k in _FLEET_KEYS + _FLEET_EXTRA}
            for k in codec.HEALTH_FLOATS + ("latency_p50_ms", "latency_p99_ms"):
                if (v := g.get(k)) is not None:
                    g[k] = float(v)  # InfluxDB's JSON writes 10.0 as 10
            for pct in ("p50", "p99"):  # {} from agents that do not report per stream
                by = {st: r.get(codec.latency_field(pct, st)) for st in STREAMS}
                g[f"latency_{pct}_ms_by_stream"] = {
                    st: float(v) for st, v in by.items() if v is not None}
            g["last_seen_ns"] = r.get("received_ns")
            try:
                g["drops"] = json.loads(r["drops_json"]) if r.get("drops_json") else {}
            except ValueError:
                g["drops"] = {}
            out.append(g)
        return sorted(out, key=lambda g: (g["site"], g["gateway"]))

    def rounds(self, limit: int = 100) -> list[dict[str, Any]]:
        """Federated rounds (``fl_round``), newest first; ``time_ns`` is the round's end."""
        if not 1 <= limit <= 10_000:
            raise ValueError("limit must be 1..10000")
        q = (f"SELECT * FROM {self._from(schema.RP_HISTORY, schema.FL_ROUND)} "
             f"ORDER BY time DESC LIMIT {int(limit)}")
        return [{"time_ns": int(r.pop("time")), **r} for r in self._rows(q)]

    def ingest_status(self) -> list[dict[str, Any]]:
        """Each ingestion process's status point (`schema.INGEST`): dead letters etc."""
        q = f"SELECT * FROM {self._from(schema.RP_EVENTS, schema.INGEST)}"
        return [{k: v for k, v in r.items() if k != "time"} for r in self._rows(q)]

    def ping(self) -> bool:
        """True if InfluxDB answers."""
        return self.influx.ping()

    # --- waterfall --------------------------------------------------------------------------

    def window(self, *, site: str, gateway: str | None, stream: str, start_ns: int, end_ns: int,
               ch_start: int, ch_end: int, max_times: int = 2000,
               field: str = "score", max_cells: int = MAX_CELLS) -> dict[str, Any]:
        """Channel groups x time buckets of one feature field (max score; mean energy or
        threshold), None where no data. Buckets are whole seconds, aligned to multiples of
        their length, at most `max_times`; finer than 5 s they come from the per-second raw
        tier while it still holds the span, else from the 10 s history (its newest, still
        open bucket from raw: at most the last minute). `gateway` None
        merges every gateway of the site. Rows follow the newest summary's channel layout;
        without any data rows are single channels.

        Raises
        ------
        ValueError
            Unknown stream or field, empty or negative ranges, bad names, or a grid of more
            than `max_cells` cells.
        """
        if stream not in STREAMS or field not in WINDOW_FIELDS:
            raise ValueError(f"stream must be in {STREAMS} and field in {WINDOW_FIELDS}")
        topics.check_name(site, "site")
        if gateway is not None:
            topics.check_name(gateway, "gateway")
        if end_ns <= start_ns or ch_start < 0 or ch_end < ch_start or max_times < 1:
            raise ValueError("need start_ns < end_ns, 0 <= ch_start <= ch_end, max_times >= 1")
        t0, step, ncols = window.plan_times(start_ns, end_ns, max_times)
        history = step >= _HISTORY_FROM_STEP_NS or start_ns < time.time_ns() - self._raw_ns()
        if history:
            t0, step, ncols = window.plan_times(start_ns, end_ns, max_times,
                                                schema.HISTORY_STEP_S * window.NS)
        rows = self._feature_rows(site, gateway, stream, field, t0, end_ns, history)
        if history and end_ns > time.time_ns() - self._raw_ns():
            # the newest 10 s bucket is written when it closes: take the tail from raw
            since = rows[-1][0] + schema.HISTORY_STEP_S * window.NS if rows else t0
            since = max(since, t0, end_ns - _TAIL_NS)
            if since < end_ns:
                rows += self._feature_rows(site, gateway, stream, field, since, end_ns, False)
        return window.assemble(rows, field, ch_start, ch_end, t0, step, ncols, max_cells,
                               schema.RP_HISTORY if history else schema.RP_RAW)

    def _feature_rows(self, site: str, gateway: str | None, stream: str, field: str,
                      t0: int, end_ns: int, history: bool) -> list[Row]:
        """(time, ch_start, group_size, n, weight, packed) per summary, oldest first."""
        rp, meas = ((schema.RP_HISTORY, schema.FEATURES_HISTORY) if history
                    else (schema.RP_RAW, schema.FEATURES))
        conds = [f'"site" = {quote_literal(site)}', f'"stream" = {quote_literal(stream)}',
                 f"time >= {int(t0)}", f"time < {int(end_ns)}"]
        if gateway is not None:
            conds.append(f'"gateway" = {quote_literal(gateway)}')
        weight = ', "count"' if history else ""
        q = (f'SELECT "ch_start", "group_size", "n", "fmt"{weight}, "{field}" '
             f"FROM {self._from(rp, meas)} WHERE {' AND '.join(conds)}")
        return window.rows_from_table(*self.influx.query_table(q, db=self.db), field)

    def _raw_ns(self) -> int:
        """The raw tier's retention in ns (cached for a minute; 24 h if unknown)."""
        now = time.monotonic()
        if self._raw_s is None or now - self._raw_s[0] > 60:
            seconds = schema.parse_duration(schema.Retention().raw)
            for r in self._rows(f"SHOW RETENTION POLICIES ON {quote_ident(self.db)}"):
                if r.get("name") == schema.RP_RAW:
                    seconds = schema.parse_duration(str(r["duration"])) or seconds
            self._raw_s = (now, seconds)
        return self._raw_s[1] * window.NS


def _event(r: dict[str, Any]) -> dict[str, Any]:
    e: dict[str, Any] = {}
    for name, typ in _EVENT_TYPES.items():
        v = r.get(name)
        e[name] = typ(v) if v is not None else None
    e["start_ns"] = int(r["start_ns"]) if r.get("start_ns") is not None else int(r["time"])
    e["received_ns"] = int(r["received_ns"]) if r.get("received_ns") is not None else None
    for k in OPTIONAL:  # as `Event.to_dict`: optional fields only when the agent sent them
        if e.get(k) is None:
            e.pop(k, None)
    e["gateway_event_id"] = r.get("gateway_event_id") or e["id"]
    return e


def _dedupe(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per id (the same id under changed tags is two series): the last received."""
    best: dict[str, dict[str, Any]] = {}
    for e in events:
        kept = best.get(e["id"])
        if kept is None or (e["received_ns"] or 0) > (kept["received_ns"] or 0):
            best[e["id"]] = e
    return [e for e in events if best[e["id"]] is e]
