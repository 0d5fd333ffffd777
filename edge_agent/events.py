"""The anomaly event schema (version 1): a public contract.

An event is what a gateway tells the cloud: one anomaly, merged over adjacent channels and
consecutive windows, scored by a named model. It travels as JSON on the ``events`` topic
(`edge_agent.topics`) at QoS1 through the gateway's durable outbox, so the same event may
arrive more than once: `id` is stable and the cloud stores each id once.

Optional fields (left out of the JSON when empty, so older consumers still take the event):
``kind`` and ``kind_confidence`` (0..1) are the classifier's verdict
(`edge_agent.classify`); ``merged_into`` withdraws an event announced under its own id that
has since merged into the event with that id (the dashboard shows only the latter).
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any

SCHEMA_VERSION = 1
SEVERITIES = ("low", "medium", "high", "critical")
CLASS_HINTS = ("leak", "sand", "flow", "fault", "unknown")
STREAMS = ("das", "dts")
_NAMESPACE = uuid.UUID("6f1d3c1e-5b0e-4c41-9a8e-0f1b3e7c2a10")


class EventError(ValueError):
    """An event message that does not satisfy the schema."""


def event_id(site: str, gateway: str, stream: str, start_ns: int, ch_start: int) -> str:
    """Stable id: the same anomaly onset on the same gateway always gets the same id."""
    return str(uuid.uuid5(_NAMESPACE, f"{site}/{gateway}/{stream}/{start_ns}/{ch_start}"))


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    site: str
    gateway: str
    stream: str
    start_ns: int
    end_ns: int
    ch_start: int  # inclusive
    ch_end: int  # inclusive
    dist_start_m: float
    dist_end_m: float
    peak_score: float
    mean_score: float
    threshold: float
    severity: str
    class_hint: str
    n_windows: int
    model_version: str
    model_hash: str  # sha256 of the model package; "none" for built-in detectors
    detected_ns: int  # when the gateway emitted it (for end-to-end latency)
    schema: int = SCHEMA_VERSION
    kind: str = ""  # the classifier's kind (one of CLASS_HINTS); "" when not classified
    kind_confidence: float = 0.0  # its confidence, 0..1
    merged_into: str = ""  # withdrawn: this anomaly is reported under that event id

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, empty in OPTIONAL.items():
            if d[k] == empty:
                del d[k]
        return d

    def __post_init__(self) -> None:
        _validate(self)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_dict(cls, d: Any) -> Event:
        if not isinstance(d, dict):
            raise EventError(f"event must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(d) - {"schema"} - set(OPTIONAL))
        if missing:
            raise EventError(f"missing field(s): {', '.join(missing)}")
        extra = sorted(set(d) - names)
        if extra:
            raise EventError(f"unknown field(s): {', '.join(extra)}")
        try:
            return cls(**d)
        except TypeError as exc:  # pragma: no cover - guarded by the checks above
            raise EventError(str(exc)) from exc

    @classmethod
    def from_json(cls, payload: bytes | str) -> Event:
        try:
            d = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise EventError(f"not JSON: {exc}") from exc
        return cls.from_dict(d)


OPTIONAL: dict[str, Any] = {"kind": "", "kind_confidence": 0.0, "merged_into": ""}
_INTS = ("start_ns", "end_ns", "ch_start", "ch_end", "n_windows", "detected_ns", "schema")
_FLOATS = ("dist_start_m", "dist_end_m", "peak_score", "mean_score", "threshold")
_STRS = ("id", "site", "gateway", "stream", "severity", "class_hint", "model_version",
         "model_hash")


def _validate(e: Event) -> None:
    for name in _INTS:
        v = getattr(e, name)
        if not isinstance(v, int) or isinstance(v, bool) or not -(2**63) <= v < 2**63:
            raise EventError(f"{name} must be an integer in the int64 range, got {v!r}")
    for name in _FLOATS:
        v = getattr(e, name)
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise EventError(f"{name} must be a finite number, got {v!r}")
    for name in _STRS:
        v = getattr(e, name)
        if not isinstance(v, str) or not v or len(v) > 256:
            raise EventError(f"{name} must be a non-empty string, got {v!r}")
    if e.schema != SCHEMA_VERSION:
        raise EventError(f"unsupported schema version {e.schema}")
    if e.stream not in STREAMS:
        raise EventError(f"stream must be one of {STREAMS}, got {e.stream!r}")
    if e.severity not in SEVERITIES:
        raise EventError(f"severity must be one of {SEVERITIES}, got {e.severity!r}")
    if e.class_hint not in CLASS_HINTS:
        raise EventError(f"class_hint must be one of {CLASS_HINTS}, got {e.class_hint!r}")
    if e.end_ns < e.start_ns:
        raise EventError("end_ns is before start_ns")
    if e.ch_end < e.ch_start or e.ch_start < 0:
        raise EventError(f"bad channel range {e.ch_start}..{e.ch_end}")
    if e.n_windows < 1:
        raise EventError("n_windows must be >= 1")
    _validate_optional(e)


def _validate_optional(e: Event) -> None:
    if not isinstance(e.kind, str) or e.kind not in ("", *CLASS_HINTS):
        raise EventError(f"kind must be one of {CLASS_HINTS} or empty, got {e.kind!r}")
    c = e.kind_confidence
    if not isinstance(c, int | float) or isinstance(c, bool) or not 0.0 <= c <= 1.0:
        raise EventError(f"kind_confidence must be a number in 0..1, got {c!r}")
    if not isinstance(e.merged_into, str) or len(e.merged_into) > 256 or e.merged_into == e.id:
        raise EventError("merged_into must be another event's id (at most 256 characters)")
