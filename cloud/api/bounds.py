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


MAX_TIME_NS = 2**63 - 1 - 10**18  # InfluxDB's int64 nanoseconds, with room for padding


def time_param(name: str, text: str | None, now_ns: int) -> int | None:
    if text is None:
        return None
    try:
        t = parse_time(text, now_ns)
    except (ValueError, OverflowError) as exc:
        raise bad(f"{name}: {exc}") from None
    if not 0 <= t <= MAX_TIME_NS:
        raise bad(f"{name}: {text!r} is outside 1970 .. 2230")
    return t


def finite(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise bad(f"{name} must be a finite number, got {value}")


def anomalies_span(settings: CloudSettings, start_ns: int | None, end_ns: int | None,
                   now_ns: int) -> tuple[int, int]:
    """The searched time range: `end` defaults to now, `start` to ``end`` minus the default
    span; at most ``anomalies_max_span_s`` long."""
    end = now_ns if end_ns is None else end_ns
    start = end - int(settings.anomalies_default_span_s * 1e9) if start_ns is None else start_ns
    start = max(0, start)
    if end < start:
        raise bad(f"end ({end}) is below start ({start})")
    if (end - start) / 1e9 > settings.anomalies_max_span_s:
        raise bad(f"time span {_span((end - start) / 1e9)} exceeds the limit of "
                  f"{_span(settings.anomalies_max_span_s)}")
    return start, end


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
        if not math.isfinite(resolution_s) or resolution_s <= 0:
            raise bad(f"resolution must be a positive number of seconds, got {resolution_s}")
        buckets = span_s / resolution_s  # may be inf (resolution=5e-324): never ceil() it
        if buckets > settings.window_max_times:
            n = str(math.ceil(buckets)) if buckets < 1e18 else f"{buckets:.3g}"
            raise bad(f"{n} time buckets exceed the limit of {settings.window_max_times}: "
                      "use a coarser resolution or a shorter span")
        max_times = max(1, math.ceil(buckets))
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
