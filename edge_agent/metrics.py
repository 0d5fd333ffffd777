"""Agent metrics: counters by reason, latency histograms (all frames, and per stream),
throughput, RSS.

Written by the network thread (queue drops) and the processing thread (everything else),
read by the health loop; every method takes the one lock, so reads are consistent snapshots.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np

from edge_agent.logs import RateLimitedLog  # noqa: F401 - re-exported: its old home

#: every counter saturates here: a hostile value (a sequence jump of 2**64) must not overflow
#: int64 and make the health line unwritable
COUNTER_MAX = 2**63 - 1

#: log-spaced latency bins, 1 µs .. 1000 s (ms units), 20 per decade
_EDGES_MS = np.logspace(-3, 6, 9 * 20 + 1)


class LatencyHistogram:
    """Fixed log-spaced bins (12 % wide); percentiles from the cumulative counts.

    Examples
    --------
    >>> h = LatencyHistogram()
    >>> for v in (1.0, 2.0, 3.0, 100.0):
    ...     h.record(v)
    >>> 1.9 < h.percentile(50) < 2.3 and h.count == 4
    True
    """

    def __init__(self) -> None:
        self.counts = np.zeros(len(_EDGES_MS) + 1, dtype=np.int64)
        self.count = 0
        self.max_ms = 0.0

    def record(self, ms: float) -> None:
        self.counts[int(np.searchsorted(_EDGES_MS, ms))] += 1
        self.count += 1
        self.max_ms = max(self.max_ms, ms)

    def record_many(self, ms: np.ndarray) -> None:
        if ms.size:
            np.add.at(self.counts, np.searchsorted(_EDGES_MS, ms), 1)
            self.count += int(ms.size)
            self.max_ms = max(self.max_ms, float(ms.max()))

    def percentile(self, p: float) -> float:
        """Upper edge of the bin holding the p-th percentile (0.0 when empty)."""
        if self.count == 0:
            return 0.0
        rank = max(1, int(np.ceil(self.count * p / 100.0)))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        return float(min(_EDGES_MS[min(i, len(_EDGES_MS) - 1)], self.max_ms))

    def to_dict(self) -> dict:
        """The non-empty bins as plain data: ``upper_ms`` (each bin's upper edge) and
        ``counts``, for plots of the whole distribution (benchmarks)."""
        nz = np.flatnonzero(self.counts)
        upper = [float(_EDGES_MS[min(int(i), len(_EDGES_MS) - 1)]) for i in nz]
        return {"upper_ms": upper, "counts": self.counts[nz].tolist(),
                "count": self.count, "max_ms": self.max_ms}

    def reset(self) -> None:
        self.counts[:] = 0
        self.count = 0
        self.max_ms = 0.0


def saturating_add(a: int, b: int) -> int:
    """``a + b`` clamped to ``0 .. COUNTER_MAX``.

    >>> saturating_add(COUNTER_MAX - 1, 2**64) == COUNTER_MAX
    True
    """
    return max(0, min(COUNTER_MAX, a + b))


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


class Metrics:
    """Counters and latency for one agent process.

    Attributes (read through `snapshot`): ``frames``, ``samples`` accepted into buffers,
    ``windows`` scored, ``samples_scored`` (new samples per scored window), ``gaps``
    (frames missing), ``drops`` by reason, ``events``, ``fa_muted_windows`` and
    ``fa_muted_groups`` (flags a labelled false alarm muted), latency histograms.

    Frame latency depends on the stream's hop (a frame waits for its window: up to 0.5 s on
    a das stream, 5 s on a dts one), so besides the histograms of every frame there is a
    recent histogram per stream; `interval` reports both.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._clock = clock
        self.started = clock()
        self.drops: dict[str, int] = {}
        self.counters: dict[str, int] = {
            "frames": 0, "samples": 0, "windows": 0, "samples_scored": 0, "gaps": 0,
            "events": 0, "summaries": 0, "resets": 0,
            # flagged windows / group-windows a labelled false alarm muted
            # (`edge_agent.fa_calibration`)
            "fa_muted_windows": 0, "fa_muted_groups": 0,
        }
        self.latency = LatencyHistogram()  # frame receive -> window scored, every frame
        self.latency_newest = LatencyHistogram()  # newest frame of a window -> scored
        self.latency_recent = LatencyHistogram()  # since the last health message
        self.latency_recent_by_stream: dict[str, LatencyHistogram] = {}  # the same, per stream
        self._rate_mark = (self.started, 0, 0)

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.drops[reason] = saturating_add(self.drops.get(reason, 0), n)
            self._changed.notify_all()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = saturating_add(self.counters.get(name, 0), n)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float) -> bool:
        """Block until ``predicate(counters + drops)`` holds or `timeout` s pass (tests,
        benchmarks); return whether it held."""
        with self._changed:
            return self._changed.wait_for(
                lambda: predicate({**self.counters, "drops": dict(self.drops)}), timeout)

    def record_latency(self, frame_ms: np.ndarray, newest_ms: float, stream: str = "") -> None:
        """One scored window: each frame's receive -> scored time, and the newest frame's.
        `stream` (its kind, ``das``/``dts``) also files them per stream; "" only in the
        all-frames histograms."""
        with self._lock:
            self.latency.record_many(frame_ms)
            self.latency_recent.record_many(frame_ms)
            self.latency_newest.record(newest_ms)
            if stream:
                h = self.latency_recent_by_stream.get(stream)
                if h is None:
                    h = self.latency_recent_by_stream[stream] = LatencyHistogram()
                h.record_many(frame_ms)

    def reset_latency(self) -> None:
        """Forget the frame latency recorded so far (the cumulative histograms; e.g. after a
        benchmark's warm-up)."""
        with self._lock:
            self.latency.reset()
            self.latency_newest.reset()

    def snapshot(self) -> dict:
        """Cumulative figures, as plain data."""
        with self._lock:
            return {
                **self.counters,
                "drops": dict(self.drops),
                "uptime_s": self._clock() - self.started,
                "latency_ms": {"p50": self.latency.percentile(50),
                               "p99": self.latency.percentile(99),
                               "max": self.latency.max_ms, "count": self.latency.count},
                "latency_newest_ms": {"p50": self.latency_newest.percentile(50),
                                      "p99": self.latency_newest.percentile(99),
                                      "max": self.latency_newest.max_ms},
            }

    def interval(self) -> dict:
        """Rates and recent latency since the previous call (for the health heartbeat).

        ``latency_ms`` covers every frame; ``latency_ms_by_stream`` ({stream: {"p50", "p99"}})
        only the streams that scored a window since the previous call (a dts stream with a
        5 s hop has none in some 5 s intervals: absent, not 0).
        """
        with self._lock:
            now = self._clock()
            t0, f0, s0 = self._rate_mark
            frames, samples = self.counters["frames"], self.counters["samples"]
            dt = max(now - t0, 1e-9)
            self._rate_mark = (now, frames, samples)
            out = {
                "frames_per_s": (frames - f0) / dt,
                "samples_per_s": (samples - s0) / dt,
                "latency_ms": {"p50": self.latency_recent.percentile(50),
                               "p99": self.latency_recent.percentile(99)},
                "latency_ms_by_stream": {
                    k: {"p50": h.percentile(50), "p99": h.percentile(99)}
                    for k, h in sorted(self.latency_recent_by_stream.items()) if h.count},
            }
            self.latency_recent.reset()
            for h in self.latency_recent_by_stream.values():
                h.reset()
            return out
