"""Anomaly events: search, detail with the waterfall around the event, and operator labels."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from cloud.api import bounds
from cloud.api.deps import CurrentUser, SettingsDep, StoreDep, needs
from cloud.api.guard import heavy_slot
from cloud.api.schemas import AnomalyDetail, LabelIn, Name, Page, Stream
from edge_agent.events import CLASS_HINTS, SEVERITIES

router = APIRouter(tags=["anomalies"])

Severity = Literal[SEVERITIES]  # type: ignore[valid-type]
ClassHint = Literal[CLASS_HINTS]  # type: ignore[valid-type]
Time = Annotated[str, Query(description="RFC 3339, ns since the epoch, or now-15m")]
DETAIL_PAD_S = 30.0  # waterfall around an event: at least this much before and after
DETAIL_PAD_CH = 32  # and at least this many channels either side
DETAIL_TIMES = 300
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (InfluxQL cannot carry some)
EventId = Annotated[str, Path(min_length=1, max_length=128, pattern=PRINTABLE)]
Distance = Annotated[float | None, Query(ge=-1e9, le=1e9, description="metres along the fiber")]
BUSY: dict[int | str, dict[str, Any]] = {
    429: {"description": "too many heavy queries at once (see Retry-After)"}}


@router.get("/anomalies", response_model=Page, responses=BUSY, **needs("viewer"))
def list_anomalies(
    store: StoreDep,
    settings: SettingsDep,
    site: Name | None = None,
    gateway: Name | None = None,
    stream: Stream | None = None,
    start: Time | None = None,
    end: Time | None = None,
    ch_min: Annotated[int | None, Query(ge=0)] = None,
    ch_max: Annotated[int | None, Query(ge=0)] = None,
    dist_min: Distance = None,
    dist_max: Distance = None,
    severity: Severity | None = None,
    class_hint: ClassHint | None = None,
    model_version: Annotated[str | None, Query(max_length=256, pattern=PRINTABLE)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    _slot: None = Depends(heavy_slot),
) -> dict[str, Any]:
    """Events overlapping [start, end], newest first, filtered; `limit` ≤ 1000 per page,
    then `next_offset`. `end` defaults to now and `start` to a year before `end`; the span is
    at most a year (400 beyond)."""
    now = time.time_ns()
    start_ns, end_ns = bounds.anomalies_span(settings, bounds.time_param("start", start, now),
                                             bounds.time_param("end", end, now), now)
    bounds.finite("dist_min", dist_min)
    bounds.finite("dist_max", dist_max)
    bounds.ordered("ch_min", ch_min, "ch_max", ch_max)
    bounds.ordered("dist_min", dist_min, "dist_max", dist_max)
    if limit > settings.anomalies_max_limit:
        raise bounds.bad(f"limit {limit} exceeds the limit of {settings.anomalies_max_limit}")
    items = store.anomalies(
        site=site, gateway=gateway, stream=stream, start_ns=start_ns, end_ns=end_ns,
        ch_min=ch_min, ch_max=ch_max, dist_min=dist_min, dist_max=dist_max, severity=severity,
        class_hint=class_hint, model_version=model_version, limit=limit, offset=offset,
    )
    more = len(items) >= limit
    return {"items": items, "limit": limit, "offset": offset,
            "next_offset": offset + len(items) if more else None}


def _event(store: StoreDep, event_id: str) -> dict[str, Any]:
    event = store.anomaly(event_id)
    if event is None:
        raise HTTPException(404, f"no anomaly with id {event_id!r}")
    return event


@router.get("/anomalies/{event_id}", response_model=AnomalyDetail, responses=BUSY,
            **needs("viewer"))
def get_anomaly(event_id: EventId, store: StoreDep, settings: SettingsDep,
                _slot: None = Depends(heavy_slot)) -> dict[str, Any]:
    """One event, its labels, and the score waterfall around it (time and channels padded)."""
    event = _event(store, event_id)
    pad_ns = int(max(DETAIL_PAD_S * 1e9, event["end_ns"] - event["start_ns"]))
    width = event["ch_end"] - event["ch_start"] + 1
    pad_ch = max(DETAIL_PAD_CH, width)
    extent = {
        "start_ns": event["start_ns"] - pad_ns, "end_ns": event["end_ns"] + pad_ns,
        "ch_start": max(0, event["ch_start"] - pad_ch), "ch_end": event["ch_end"] + pad_ch,
    }
    try:
        times = bounds.window_times(settings, **extent, resolution_s=None,
                                    max_times=min(DETAIL_TIMES, settings.window_max_times))
        waterfall = store.window(site=event["site"], gateway=event["gateway"],
                                 stream=event["stream"], **extent, max_times=times, field="score",
                                 max_cells=settings.window_max_cells)
    except (HTTPException, ValueError) as exc:
        reason = exc.detail if isinstance(exc, HTTPException) else str(exc)
        return {"event": event, "waterfall": None, "waterfall_error": reason}
    return {"event": event, "waterfall": waterfall}


@router.get("/anomalies/{event_id}/labels", **needs("viewer"))
def get_labels(event_id: EventId, store: StoreDep) -> dict[str, Any]:
    _event(store, event_id)
    return {"items": store.labels(event_id)}


@router.post("/anomalies/{event_id}/labels", status_code=201, **needs("operator"))
def add_label(event_id: EventId, body: LabelIn, store: StoreDep,
              user: CurrentUser) -> dict[str, Any]:
    """Confirm an event (``kind``: what it was, e.g. leak), mark it a false alarm or
    maintenance, or attach a note (operator or admin). Labels other than notes reach the
    event's gateway (`cloud.labels`) and the next federated round."""
    try:
        return store.add_label(event_id, label=body.label, note=body.note, user=user.name,
                               kind=body.kind)
    except LookupError:
        raise HTTPException(404, f"no anomaly with id {event_id!r}") from None
