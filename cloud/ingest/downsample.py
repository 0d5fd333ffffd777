"""The ingestion's own downsampling of feature summaries into 10 s history buckets.

Packed arrays cannot be aggregated by InfluxDB's continuous queries, so the writer merges
each gateway's summaries per stream and 10 s bucket (max score, mean energy, mean
threshold per group) and emits a ``features_10s`` line when the bucket closes: when a later
bucket starts, when no summary came for `idle_s`, or at shutdown.

Best effort by design: the raw tier is the durable one (its messages are acknowledged only
once written). A bucket still open when the process dies is lost from history, and a
summary for an already emitted bucket is counted as ``late_history`` and left out of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cloud import codec, schema
from cloud.ingest.parse import FeaturesRecord

Key = tuple[str, str, str]


@dataclass(slots=True)
class _Bucket:
    start_ns: int
    layout: tuple[int, int, int]  # ch_start, group_size, n
    score: np.ndarray
    energy: np.ndarray
    threshold: np.ndarray
    count: int
    flagged: int
    model_version: str
    touched: float


class Downsampler:
    """Merge summaries into `step_s` buckets; every method returns the lines to write."""

    def __init__(self, step_s: int = schema.HISTORY_STEP_S, idle_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.step_ns = int(step_s * 1e9)
        self.idle_s = 2.0 * step_s if idle_s is None else idle_s
        self._clock = clock
        self._open: dict[Key, _Bucket] = {}
        self._emitted: dict[Key, int] = {}  # start of the last emitted bucket
        self.late = 0

    def add(self, r: FeaturesRecord) -> list[str]:
        """Merge `r`; returns the line of the bucket it closed, if any."""
        key = (r.site, r.gateway, r.stream)
        start = r.t_ns // self.step_ns * self.step_ns
        layout = (r.ch_start, r.group_size, len(r.score))
        b = self._open.get(key)
        if (start < b.start_ns) if b is not None else (start <= self._emitted.get(key, -1)):
            self.late += 1
            return []
        out: list[str] = []
        if b is not None and (start > b.start_ns or layout != b.layout):
            out.append(self._emit(key))  # a layout change mid-bucket overwrites: rare
            b = None
        if b is None:
            self._open[key] = _Bucket(start, layout, _f64(r.score), _f64(r.energy),
                                      _f64(r.threshold), 1, r.flagged, r.model_version,
                                      self._clock())
            return out
        np.maximum(b.score, r.score, out=b.score)
        b.energy += r.energy
        b.threshold += r.threshold
        b.count += 1
        b.flagged = max(b.flagged, r.flagged)
        b.model_version = r.model_version
        b.touched = self._clock()
        return out

    def flush_idle(self) -> list[str]:
        """Emit buckets that got no summary for `idle_s`."""
        now = self._clock()
        idle = [k for k, b in self._open.items() if now - b.touched >= self.idle_s]
        return [self._emit(k) for k in idle]

    def flush_all(self) -> list[str]:
        """Emit every open bucket (at shutdown)."""
        return [self._emit(k) for k in list(self._open)]

    def _emit(self, key: Key) -> str:
        b = self._open.pop(key)
        self._emitted[key] = b.start_ns
        site, gateway, stream = key
        return codec.features_line(
            schema.FEATURES_HISTORY, site=site, gateway=gateway, stream=stream, t_ns=b.start_ns,
            ch_start=b.layout[0], group_size=b.layout[1], score=b.score,
            energy=b.energy / b.count, threshold=b.threshold / b.count,
            model_version=b.model_version, flagged=b.flagged, count=b.count)


def _f64(a: np.ndarray) -> np.ndarray:
    """A float64 copy (the sums of a bucket stay in float64 whatever a summary holds)."""
    return a.astype(np.float64)
