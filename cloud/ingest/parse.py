"""Parse one MQTT message into a typed record, or raise `Malformed` with a counted reason.

The contracts decide what is valid: `Event.from_json` for events and `FeatureSummary` for
feature summaries. Packed summaries (schema 2, `edge_agent.summary.split_packed`) are read
with numpy alone: header JSON, then views of the float32 arrays, checked as arrays. JSON
summaries (schema 1, gateways not yet upgraded) are read as follows. A summary of 1,024
groups costs ~1.9 ms through
`FeatureSummary.from_json` (JSON of 3,072 floats, then a per-value check), so summaries
take a fast path first: orjson, then ``struct.pack`` of each list as doubles, which takes
numbers only (like the contract) and is ~4x faster than ``np.array(list)`` guessing the
dtype. It accepts only what `FeatureSummary` accepts; anything it doubts goes through
`FeatureSummary` itself. On top of the contracts the cloud checks what it relies on: the
payload's site/gateway/stream match the topic, integer times and channel layout, schema
version 1.

A summary's line protocol is built by the writer for a whole batch at once
(`cloud.ingest.lines`): numpy calls per batch rather than a dozen per summary.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from cloud import codec, model_health, schema
from edge_agent import topics
from edge_agent.events import STREAMS, Event, EventError
from edge_agent.summary import (
    HEALTH_KEYS,
    HEALTH_SCHEMA,
    PACKED_MAGIC,
    SCHEMA_VERSION,
    FeatureSummary,
    SummaryError,
    split_packed,
)

_SUMMARY_REQUIRED = frozenset({"site", "gateway", "stream", "t_ns", "ch_start", "group_size",
                               "score", "energy", "threshold", "model_version"})
_SUMMARY_ALLOWED = _SUMMARY_REQUIRED | {"flagged", "schema"}
_HEALTH_NUMBERS = ("uptime_s", "frames_per_s", "samples_per_s", "queue_depth", "gaps",
                   "outbox_depth", "outbox_evicted", "rss_mb")


class Malformed(ValueError):
    """A message that is not stored. `reason` is short and from a small set (for counters)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event stored under its cloud id (`codec.cloud_event_id`) and the gateway's id."""

    event: Event
    gateway_event_id: str = ""


@dataclass(frozen=True, slots=True)
class FeaturesRecord:
    site: str
    gateway: str
    stream: str
    t_ns: int
    ch_start: int
    group_size: int
    score: np.ndarray  # one value per group: float32 (packed) or float64 (JSON)
    energy: np.ndarray
    threshold: np.ndarray
    model_version: str
    flagged: int  # how many groups were flagged

    @property
    def nbytes(self) -> int:
        """Its size while buffered: the arrays (views of the payload) and, once the writer
        builds it, its line (~11 characters per group)."""
        return self.score.nbytes * 3 + 11 * len(self.score) + 200

    def raw_line(self) -> str:
        """The ``features`` point of this summary (the raw tier; the writer builds a whole
        batch's at once, `cloud.ingest.lines.raw_lines`, to the same text)."""
        return codec.features_line(
            schema.FEATURES, site=self.site, gateway=self.gateway, stream=self.stream,
            t_ns=self.t_ns, ch_start=self.ch_start, group_size=self.group_size,
            score=self.score, energy=self.energy, threshold=self.threshold,
            model_version=self.model_version, flagged=self.flagged)


@dataclass(frozen=True, slots=True)
class HealthRecord:
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelStateRecord:
    site: str
    gateway: str
    data: dict[str, Any]


Record = EventRecord | FeaturesRecord | HealthRecord | ModelStateRecord


def parse(topic: str, payload: bytes) -> Record:
    """The record for one message on one of the cloud's subscriptions.

    Raises
    ------
    Malformed
        With ``reason`` like ``features:json``, ``event:schema``, ``health:topic_mismatch``.
    """
    try:
        site, gateway, suffix = topics.parse(topic)
    except ValueError as exc:
        raise Malformed("topic", str(exc)) from None
    if suffix == "events":
        return _event(site, gateway, payload)
    if suffix.startswith("features/"):
        return _features(site, gateway, suffix[len("features/"):], payload)
    if suffix == "health":
        return HealthRecord(_health(site, gateway, _json_object("health", payload)))
    if suffix == "model_state":
        return ModelStateRecord(site, gateway, _model_state(_json_object("model_state", payload)))
    raise Malformed("topic", f"unexpected topic {topic!r}")


def _json_object(kind: str, payload: bytes) -> dict[str, Any]:
    if not payload:
        raise Malformed(f"{kind}:empty", "empty payload (a cleared retained message)")
    try:
        d = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"{kind}:json", str(exc)) from None
    if not isinstance(d, dict):
        raise Malformed(f"{kind}:schema", f"must be a JSON object, got {type(d).__name__}")
    return d


def _event(site: str, gateway: str, payload: bytes) -> EventRecord:
    try:
        e = Event.from_json(payload)
    except EventError as exc:
        kind = "json" if str(exc).startswith("not JSON") else "schema"
        raise Malformed(f"event:{kind}", str(exc)) from None
    if (e.site, e.gateway) != (site, gateway):
        raise Malformed("event:topic_mismatch", f"{e.site}/{e.gateway} on {site}/{gateway}")
    # the topic's gateway is the authority: its events live under ids only it can produce
    # (and so do the ids it names: ``merged_into`` points at another of its own events)
    merged = codec.cloud_event_id(site, gateway, e.merged_into) if e.merged_into else ""
    scoped = dataclasses.replace(e, id=codec.cloud_event_id(site, gateway, e.id),
                                 merged_into=merged)
    return EventRecord(scoped, e.id)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _features(site: str, gateway: str, stream: str, payload: bytes) -> FeaturesRecord:
    if payload[:4] == PACKED_MAGIC:
        d, arrays = _packed(payload)
    else:
        d, arrays = _json_summary(payload)
    if (d["site"], d["gateway"], d["stream"]) != (site, gateway, stream):
        raise Malformed("features:topic_mismatch",
                        f"{d['site']}/{d['gateway']}/{d['stream']} on {site}/{gateway}/{stream}")
    if d["t_ns"] <= 0:
        raise Malformed("features:schema", "t_ns must be positive")
    mv = d["model_version"]
    if not isinstance(mv, str) or not mv or len(mv) > 256:
        raise Malformed("features:schema", f"model_version must be a non-empty string, got {mv!r}")
    score, energy, threshold = arrays
    return FeaturesRecord(site, gateway, stream, d["t_ns"], d["ch_start"], d["group_size"],
                          score, energy, threshold, mv, d["n_flagged"])


def _packed(payload: bytes) -> tuple[dict[str, Any], tuple[np.ndarray, ...]]:
    """A schema 2 summary: its header and its float32 arrays (read-only views of the
    payload: no copy, no per-value work; `codec.pack` takes float32 as it is)."""
    try:
        h, score, energy, threshold, _ = split_packed(payload, orjson.loads)
    except SummaryError as exc:
        raise Malformed("features:schema", str(exc)) from None
    return h, (score, energy, threshold)


def _json_summary(payload: bytes) -> tuple[dict[str, Any], tuple[np.ndarray, ...]]:
    """A schema 1 (JSON) summary: the object, ``n_flagged`` added, and its arrays."""
    d = _json_object("features", payload)
    arrays = _fast_arrays(d)
    if arrays is None:  # let the contract decide, and say why
        try:
            FeatureSummary(**d)
        except (SummaryError, TypeError) as exc:
            raise Malformed("features:schema", str(exc)) from None
        arrays = (np.asarray(d["score"], dtype=np.float64),
                  np.asarray(d["energy"], dtype=np.float64),
                  np.asarray(d["threshold"], dtype=np.float64))
    if d.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise Malformed("features:schema", f"unsupported schema version {d.get('schema')!r}")
    for k in ("t_ns", "ch_start", "group_size"):
        if not _is_int(d[k]):
            raise Malformed("features:schema", f"{k} must be an integer, got {d[k]!r}")
    d["n_flagged"] = len(d.get("flagged", ()))
    return d, arrays


def _fast_arrays(d: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The three arrays if `d` is surely a valid summary, else None (use the slow path)."""
    keys = d.keys()
    if not (_SUMMARY_REQUIRED <= keys <= _SUMMARY_ALLOWED):
        return None
    if d["stream"] not in ("das", "dts"):
        return None
    if not (_is_int(d["group_size"]) and _is_int(d["ch_start"])):
        return None
    if d["group_size"] < 1 or d["ch_start"] < 0:
        return None
    n = len(d["score"]) if isinstance(d["score"], list) else 0
    out = []
    for k in ("score", "energy", "threshold"):
        v = d[k]
        if not isinstance(v, list) or not v or len(v) != n:
            return None
        try:  # numbers only (as the contract: int, float, bool); str, None, lists raise
            a = np.frombuffer(_doubles(n).pack(*v), dtype=np.float64)
        except (struct.error, TypeError, OverflowError):
            return None
        if not np.isfinite(a).all():
            return None
        out.append(a)
    flagged = d.get("flagged", [])
    if not isinstance(flagged, list):
        return None
    if not all(type(i) is int and 0 <= i < n for i in flagged):
        return None
    return out[0], out[1], out[2]


@functools.lru_cache(maxsize=64)
def _doubles(n: int) -> struct.Struct:
    """The packer of `n` little-endian doubles (one per summary length seen)."""
    return struct.Struct(f"<{n}d")


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _health(site: str, gateway: str, d: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in HEALTH_KEYS if k not in d]
    if missing:
        raise Malformed("health:schema", f"missing key(s): {', '.join(missing)}")
    if d["schema"] != HEALTH_SCHEMA:
        raise Malformed("health:schema", f"unsupported schema version {d['schema']!r}")
    if (d["site"], d["gateway"]) != (site, gateway):
        raise Malformed("health:topic_mismatch", f"{d['site']}/{d['gateway']} on {site}/{gateway}")
    if not _is_int(d["t_ns"]) or d["t_ns"] <= 0:
        raise Malformed("health:schema", f"t_ns must be a positive integer, got {d['t_ns']!r}")
    bad = [k for k in _HEALTH_NUMBERS if not _number(d[k])]
    lat, drops = d["latency_ms"], d["drops"]
    if not isinstance(lat, dict) or not all(_number(lat.get(p)) for p in ("p50", "p99")):
        bad.append("latency_ms")
    if not isinstance(drops, dict) or not all(_number(v) for v in drops.values()):
        bad.append("drops")
    if "latency_ms_by_stream" in d and not _by_stream(d["latency_ms_by_stream"]):
        bad.append("latency_ms_by_stream")  # optional (older agents): checked when present
    if "model_health" in d and not model_health.valid(d["model_health"]):
        bad.append("model_health")  # optional: drift figures (`cloud.model_health`)
    bad += [k for k in codec.HEALTH_OPTIONAL_INTS  # optional: checked when present
            if k in d and not (_is_int(d[k]) and 0 <= d[k] < 2**63)]
    bad += [k for k in ("status", "model_version", "model_hash") if not isinstance(d[k], str)]
    if bad:
        raise Malformed("health:schema", f"bad value(s) for {', '.join(bad)}")
    return d


def _by_stream(v: object) -> bool:
    """``latency_ms_by_stream``: {stream kind: {"p50": number, "p99": number}}."""
    return isinstance(v, dict) and all(
        k in STREAMS and isinstance(p, dict) and all(_number(p.get(q)) for q in ("p50", "p99"))
        for k, p in v.items())


def _model_state(d: dict[str, Any]) -> dict[str, Any]:
    bad = [k for k in ("model_version", "model_hash", "status")
           if not isinstance(d.get(k), str) or not d[k]]
    if bad:
        raise Malformed("model_state:schema", f"missing or empty {', '.join(bad)}")
    return d
