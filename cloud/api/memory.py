"""In-memory `StoreLike` and `RegistryLike`: for API tests and dashboard work without InfluxDB.

Same return shapes as `cloud.store.Store` and `federation.registry.store.Registry` (and the
registry's own state machine, `federation.registry.store.TRANSITIONS`); the filters
are simple (linear scans) and the waterfall takes the max (score) or mean (other fields)
of the summaries in each time bucket.
"""

from __future__ import annotations

import builtins
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cloud import codec
from edge_agent.events import Event
from edge_agent.summary import FeatureSummary
from federation.registry.store import STATES, TRANSITIONS


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, dict[str, Any]] = {}
        self._labels: dict[str, list[dict[str, Any]]] = {}
        self._summaries: list[FeatureSummary] = []
        self.gateways: dict[tuple[str, str], dict[str, Any]] = {}
        self.round_rows: list[dict[str, Any]] = []
        self.ingest_rows: list[dict[str, Any]] = []  # as `Store.ingest_status` returns them
        self.up = True

    def add_event(self, event: Event, received_ns: int | None = None) -> None:
        row = {**event.to_dict(), "received_ns": received_ns or time.time_ns(),
               "gateway_event_id": event.id}
        with self._lock:
            self._events[event.id] = row

    def add_summary(self, summary: FeatureSummary) -> None:
        with self._lock:
            self._summaries.append(summary)

    def add_health(self, msg: dict[str, Any]) -> None:
        """A health heartbeat (`edge_agent.summary.HEALTH_KEYS`) as a `fleet` row."""
        row = {k: msg[k] for k in ("site", "gateway", "status", "model_version", "model_hash",
                                   "frames_per_s", "samples_per_s", "outbox_depth", "gaps",
                                   "rss_mb")}
        row.update(last_seen_ns=msg["t_ns"], drops_total=sum(msg["drops"].values()),
                   latency_p50_ms=msg["latency_ms"]["p50"],
                   latency_p99_ms=msg["latency_ms"]["p99"])
        row.update({k: msg.get(k) for k in codec.HEALTH_OPTIONAL_INTS})  # None: older agents
        by_stream = msg.get("latency_ms_by_stream", {})  # optional (older agents)
        key = (msg["site"], msg["gateway"])
        with self._lock:
            old = self.gateways.get(key, {})
            for pct in ("p50", "p99"):  # a stream missing from one heartbeat keeps its last
                name = f"latency_{pct}_ms_by_stream"  # values, as InfluxDB's fleet point does
                row[name] = {**old.get(name, {}),
                             **{k: v[pct] for k, v in by_stream.items()}}
            self.gateways[key] = row

    def anomalies(self, *, limit: int = 100, offset: int = 0,
                  **f: Any) -> list[dict[str, Any]]:  # the filters of `Store.anomalies`
        def keep(e: dict[str, Any]) -> bool:
            return all((
                all(f.get(k) in (None, e[k]) for k in
                    ("site", "gateway", "stream", "severity", "class_hint", "model_version")),
                f.get("start_ns") is None or e["end_ns"] >= f["start_ns"],
                f.get("end_ns") is None or e["start_ns"] <= f["end_ns"],
                f.get("ch_min") is None or e["ch_end"] >= f["ch_min"],
                f.get("ch_max") is None or e["ch_start"] <= f["ch_max"],
                f.get("dist_min") is None or e["dist_end_m"] >= f["dist_min"],
                f.get("dist_max") is None or e["dist_start_m"] <= f["dist_max"],
            ))

        with self._lock:
            rows = sorted((e for e in self._events.values() if keep(e)),
                          key=lambda e: e["start_ns"], reverse=True)
        return [self._with_labels(e) for e in rows[offset:offset + limit]]

    def _with_labels(self, e: dict[str, Any]) -> dict[str, Any]:
        return {**e, "labels": list(self._labels.get(e["id"], []))}

    def anomaly(self, event_id: str) -> dict[str, Any] | None:
        e = self._events.get(event_id)
        return None if e is None else self._with_labels(e)

    def window(self, *, site: str, gateway: str | None, stream: str, start_ns: int, end_ns: int,
               ch_start: int, ch_end: int, max_times: int = 2000,
               field: str = "score", max_cells: int = 20_000_000) -> dict[str, Any]:
        if end_ns <= start_ns or ch_end < ch_start or max_times < 1:
            raise ValueError("empty time or channel range")
        step = max(10**9, math.ceil((end_ns - start_ns) / max_times / 10**9) * 10**9)
        t0 = start_ns - start_ns % step
        ncols = math.ceil((end_ns - t0) / step)
        picked = [s for s in self._summaries
                  if (s.site, s.stream) == (site, stream) and gateway in (None, s.gateway)
                  and start_ns <= s.t_ns < end_ns]
        group = picked[0].group_size if picked else 1
        nrows = (ch_end - (ch_start - ch_start % group)) // group + 1
        if nrows * ncols > max_cells:
            raise ValueError(f"window of {nrows} channel groups x {ncols} times is too large "
                             f"(max {max_cells} cells): narrow it or ask for fewer times")
        times = list(range(t0, end_ns, step))
        channels = list(range(ch_start - ch_start % group, ch_end + 1, group))
        cells: dict[tuple[int, int], list[float]] = {}
        for s in picked:
            col = (s.t_ns - t0) // step
            for i, v in enumerate(getattr(s, field)):
                ch = s.ch_start + i * s.group_size
                if channels[0] <= ch <= ch_end:
                    cells.setdefault(((ch - channels[0]) // group, col), []).append(v)
        agg = max if field == "score" else (lambda vs: sum(vs) / len(vs))
        values = [[agg(cells[(r, c)]) if (r, c) in cells else None for c in range(len(times))]
                  for r in range(len(channels))]
        return {"times_ns": times, "ch_start": ch_start, "ch_end": ch_end, "group_size": group,
                "channels": channels, "values": values, "field": field,
                "resolution_s": step / 1e9}

    def fleet(self) -> list[dict[str, Any]]:
        return [dict(g) for g in self.gateways.values()]

    def rounds(self, limit: int = 100) -> list[dict[str, Any]]:
        return sorted(self.round_rows, key=lambda r: r["time_ns"], reverse=True)[:limit]

    def add_label(self, event_id: str, *, label: str, note: str, user: str,
                  kind: str = "") -> dict[str, Any]:
        if event_id not in self._events:
            raise LookupError(f"no event with id {event_id!r}")
        row = {"event_id": event_id, "label": label, "note": note, "user": user,
               "time_ns": time.time_ns(), "kind": kind}
        with self._lock:
            self._labels.setdefault(event_id, []).append(row)
        return row

    def labels(self, event_id: str) -> list[dict[str, Any]]:
        return list(self._labels.get(event_id, []))

    def all_labels(self, since_ns: int = 0) -> list[dict[str, Any]]:
        return sorted((r for v in self._labels.values() for r in v if r["time_ns"] >= since_ns),
                      key=lambda r: r["time_ns"])

    def ingest_status(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.ingest_rows]

    def ping(self) -> bool:
        return self.up


@dataclass
class MemoryModel:
    version: str
    parent: str | None = None
    created: float = field(default_factory=time.time)
    state: str = "candidate"
    metrics: dict[str, float] = field(default_factory=dict)
    package_hash: str = "0" * 64
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MemoryRegistry:
    def __init__(self, *models: MemoryModel) -> None:
        self._models = {m.version: m for m in models}
        self._history: list[dict[str, Any]] = []

    def list(self) -> list[MemoryModel]:
        return list(self._models.values())

    def get(self, version: str) -> MemoryModel:
        return self._models[version]

    def production(self) -> MemoryModel | None:
        return next((m for m in self._models.values() if m.state == "production"), None)

    def history(self) -> builtins.list[dict[str, Any]]:
        return [dict(h) for h in self._history]

    def promote(self, version: str, *, to: str, reason: str = "", actor: str = "") -> MemoryModel:
        if to not in STATES:
            raise ValueError(f"unknown state {to!r}; choose from {', '.join(STATES)}")
        model = self._models[version]
        if to not in TRANSITIONS[model.state]:  # the real registry's state machine
            raise ValueError(f"cannot promote {version} from {model.state} to {to}")
        current = self.production()
        if to == "production" and current is not None:
            self._move(current, "retired", f"replaced by {version}", actor)
        self._move(model, to, reason, actor)
        return model

    def rollback(self, *, reason: str = "", actor: str = "") -> MemoryModel:
        replaced = [h for h in self._history if h["from"] == "production"]
        if not replaced:
            raise ValueError("no previous production model to roll back to")
        previous = self._models[replaced[-1]["version"]]
        current = self.production()
        if current is not None:
            self._move(current, "retired", reason or "rollback", actor)
        self._move(previous, "production", reason or "rollback", actor)
        return previous

    def _move(self, model: MemoryModel, to: str, reason: str, actor: str) -> None:
        self._history.append({"time": time.time(), "version": model.version,
                              "from": model.state, "to": to, "reason": reason, "actor": actor})
        model.state = to
