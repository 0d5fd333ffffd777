"""Query bounds and their 400 reasons: time ranges, channel ranges, waterfall sizes."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from fastapi import HTTPException

from cloud.api.timeparse import format_time, parse_time
from cloud.settings import CloudSettings


def bad(reason: str) -> HTTPException:
    return HTTPException(400, reason)


def time_param(name: str, text: str | None, now_ns: int) -> int | None:
    if text is None:
        return None
    try:
        return parse_time(text, now_ns)
    except ValueError as exc:
        raise bad(f"{name}: {exc}") from None


def ordered(lo_name: str, lo: float | None, hi_name: str, hi: float | None) -> None:
    if lo is not None and hi is not None and hi < lo:
        raise bad(f"{hi_name} ({hi}) is below {lo_name} ({lo})")


def _span(seconds: float) -> str:
    return f"{seconds / 86400:g} d" if seconds >= 86400 else f"{seconds:g} s"


def window_times(
    settings: CloudSettings, *, start_ns: int, end_ns: int, ch_start: int, ch_end: int,
    max_times: int | None, resolution_s: float | None,
) -> int:
    """Check a waterfall request against the limits; the number of time buckets to ask for."""
    if end_ns <= start_ns:
        raise bad("end must be after start")
    span_s = (end_ns - start_ns) / 1e9
    if span_s > settings.window_max_span_s:
        raise bad(f"time span {_span(span_s)} exceeds the limit of "
                  f"{_span(settings.window_max_span_s)}")
    if ch_end < ch_start:
        raise bad(f"ch_end ({ch_end}) is below ch_start ({ch_start})")
    n_channels = ch_end - ch_start + 1
    if n_channels > settings.window_max_channels:
        raise bad(f"{n_channels} channels exceed the limit of {settings.window_max_channels}")
    if max_times is not None and resolution_s is not None:
        raise bad("give max_times or resolution, not both")
    if resolution_s is not None:
        max_times = math.ceil(span_s / resolution_s)
    times = settings.window_default_times if max_times is None else max_times
    if times > settings.window_max_times:
        raise bad(f"{times} time buckets exceed the limit of {settings.window_max_times}: "
                  "use a coarser resolution or a shorter span")
    return times


def window_csv(window: dict[str, Any]) -> str:
    """One row per time bucket: time, time_ns, then one column per channel group."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time", "time_ns", *(f"ch_{c}" for c in window["channels"])])
    columns = window["values"]
    for i, t in enumerate(window["times_ns"]):
        row = ("" if col[i] is None else repr(float(col[i])) for col in columns)
        writer.writerow([format_time(t), t, *row])
    return out.getvalue()
