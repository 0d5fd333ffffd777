"""The waterfall: score, energy or threshold per channel group over time, as JSON or CSV."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse

from cloud.api import bounds
from cloud.api.deps import SettingsDep, StoreDep, needs
from cloud.api.guard import heavy_slot
from cloud.api.schemas import Name, Stream, Window, WindowField

router = APIRouter(tags=["window"])

_TIME = "RFC 3339, ns since the epoch, or now-15m"


@router.get(
    "/window", response_model=Window, **needs("viewer"),
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"},
               429: {"description": "too many heavy queries at once (see Retry-After)"}},
)
def get_window(
    store: StoreDep,
    settings: SettingsDep,
    site: Name,
    stream: Stream,
    start: Annotated[str, Query(description=_TIME)],
    end: Annotated[str, Query(description=_TIME)],
    ch_start: Annotated[int, Query(ge=0)],
    ch_end: Annotated[int, Query(ge=0)],
    gateway: Name | None = None,
    max_times: Annotated[int | None, Query(ge=1, description="time buckets, at most 5000")] = None,
    resolution: Annotated[float | None, Query(gt=0, description="seconds per bucket")] = None,
    field: WindowField = "score",
    format: Literal["json", "csv"] = "json",
    _slot: None = Depends(heavy_slot),
) -> Any:
    """A bounded waterfall: channel count, time span and buckets are capped (400 beyond)."""
    now = time.time_ns()
    start_ns = bounds.time_param("start", start, now)
    end_ns = bounds.time_param("end", end, now)
    assert start_ns is not None and end_ns is not None
    times = bounds.window_times(settings, start_ns=start_ns, end_ns=end_ns, ch_start=ch_start,
                                ch_end=ch_end, max_times=max_times, resolution_s=resolution)
    try:
        window = store.window(site=site, gateway=gateway, stream=stream, start_ns=start_ns,
                              end_ns=end_ns, ch_start=ch_start, ch_end=ch_end, max_times=times,
                              field=field, max_cells=settings.window_max_cells)
    except ValueError as exc:
        raise bounds.bad(str(exc)) from None
    if format == "csv":
        return PlainTextResponse(bounds.window_csv(window), media_type="text/csv")
    return window
