"""Checks on a message before and after parsing: its size per kind, and its time.

Both raise `Malformed`, so a refused message is counted and acknowledged like any other
invalid one and never reaches the writer: one oversized or future-timed message cannot
stall ingestion, freeze a gateway's fleet row or its 10 s history.
"""

from __future__ import annotations

from cloud.ingest.config import IngestSettings
from cloud.ingest.parse import (
    EventRecord,
    FeaturesRecord,
    HealthRecord,
    Malformed,
    ModelStateRecord,
    Record,
)


def topic_kind(topic: str) -> str:
    """``features``, ``event``, ``health``, ``model_state`` or ``other`` (from the topic's end)."""
    parts = topic.rsplit("/", 2)
    if len(parts) == 3 and parts[1] == "features":
        return "features"
    return {"events": "event", "health": "health", "model_state": "model_state"}.get(
        parts[-1], "other")


def check_size(topic: str, nbytes: int, settings: IngestSettings) -> None:
    """Refuse a payload above its kind's cap, before anything parses it."""
    kind = topic_kind(topic)
    cap = settings.payload_cap(kind)
    if nbytes > cap:
        raise Malformed(f"{kind}:too_large", f"{nbytes} bytes on {topic} (cap {cap})")


def record_times(record: Record) -> list[int]:
    """The times a record would be stored at (ns)."""
    if isinstance(record, FeaturesRecord):
        return [record.t_ns]
    if isinstance(record, HealthRecord):
        return [record.data["t_ns"]]
    if isinstance(record, EventRecord):
        return [record.event.start_ns, record.event.end_ns]
    if isinstance(record, ModelStateRecord):
        t = record.data.get("t_ns")
        return [t] if isinstance(t, int) and not isinstance(t, bool) else []
    return []


def check_time(record: Record, received_ns: int, settings: IngestSettings) -> None:
    """Refuse a record timed more than ``max_future_s`` after its arrival."""
    limit = received_ns + int(settings.max_future_s * 1e9)
    ahead = [t for t in record_times(record) if t > limit]
    if ahead:
        kind = {FeaturesRecord: "features", HealthRecord: "health", EventRecord: "event",
                ModelStateRecord: "model_state"}[type(record)]
        raise Malformed(f"{kind}:future_time", f"t_ns {max(ahead)} is "
                        f"{(max(ahead) - received_ns) / 1e9:.0f} s after its arrival "
                        f"(limit {settings.max_future_s:g} s)")
