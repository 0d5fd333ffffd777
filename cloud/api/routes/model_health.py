"""Model health over time per gateway and model version (drift figures from heartbeats)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from cloud import model_health
from cloud.api import bounds
from cloud.api.deps import StoreDep, needs
from cloud.api.schemas import Name

router = APIRouter(tags=["model health"])
Time = Annotated[str, Query(description="RFC 3339, ns since the epoch, or now-1h")]


@router.get("/model-health", **needs("viewer"))
def get_model_health(store: StoreDep, site: Name | None = None, gateway: Name | None = None,
                     start: Time = "now-1h", end: Time = "now",
                     limit: Annotated[int, Query(ge=1, le=10000)] = 5000) -> dict[str, Any]:
    """Score shift (PSI against the package's training quantiles), int8 saturation,
    feature out-of-range and fallback rates per gateway, stream and model version, oldest
    first."""
    now = time.time_ns()
    start_ns, end_ns = bounds.time_param("start", start, now), bounds.time_param("end", end, now)
    bounds.ordered("start", start_ns, "end", end_ns)
    client = getattr(store, "influx", None)
    if client is None:  # the in-memory sample data has no model health
        return {"items": [], "now_ns": now, "stored": False}
    items = model_health.query(client, str(getattr(store, "db", "fiberwatch")), site=site,
                               gateway=gateway, start_ns=start_ns or 0, end_ns=end_ns or now,
                               limit=limit)
    return {"items": items, "now_ns": now}


def precision_by_kind(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per predicted kind: events labelled confirmed / false_alarm (an event's latest such
    label counts) and precision = confirmed / (confirmed + false_alarm)."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        verdicts = [lb["label"] for lb in e.get("labels") or ()
                    if lb["label"] in ("confirmed", "false_alarm")]
        if not verdicts:
            continue
        kind = str(e.get("kind") or e.get("class_hint") or "unknown")
        row = out.setdefault(kind, {"confirmed": 0, "false_alarm": 0})
        row[verdicts[-1]] += 1
    for row in out.values():
        row["labelled"] = row["confirmed"] + row["false_alarm"]
        row["precision"] = round(row["confirmed"] / row["labelled"], 4)
    return out


@router.get("/model-health/precision", **needs("viewer"))
def get_precision(store: StoreDep, site: Name | None = None, gateway: Name | None = None,
                  start: Time = "now-30d", end: Time = "now",
                  model_version: Annotated[str | None, Query(max_length=256)] = None
                  ) -> dict[str, Any]:
    """Predicted vs observed: per event kind, how many labelled events operators confirmed
    or marked false alarms, and the precision (at most the 10,000 newest events)."""
    now = time.time_ns()
    start_ns, end_ns = bounds.time_param("start", start, now), bounds.time_param("end", end, now)
    bounds.ordered("start", start_ns, "end", end_ns)
    events = store.anomalies(site=site, gateway=gateway, start_ns=start_ns, end_ns=end_ns,
                             model_version=model_version, limit=10_000)
    return {"kinds": precision_by_kind(events), "events": len(events), "now_ns": now}
