"""The window stage: per-stream sample buffer, gap handling, sliding windows.

`StreamBuffer` keeps the samples of one stream in one preallocated float32 array,
time-major ``(capacity, n_channels)`` like a frame, and hands out windows as read-only views
(no copy). When the array is full, the samples still needed (from the next window's start)
are moved to the front, once per ``capacity - window`` samples.

Windows never bridge a gap: `reset` (called for a sequence gap, a stream restart or a time
jump) discards the buffer, and windows resume once ``window_samples`` contiguous samples have
arrived; that first window is marked ``after_gap``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from edge_agent.types import Window


class StreamBuffer:
    """Contiguous samples of one stream -> sliding `Window` views.

    Parameters
    ----------
    stream : str
        ``"das"`` or ``"dts"``.
    n_channels, first_channel : int
    sample_rate_hz : float
    window_samples, hop_samples : int
        From `edge_agent.features.FeatureSpec`.
    capacity : int, optional
        Initial rows (default ``2 * window_samples``); grows if a frame does not fit.

    Examples
    --------
    >>> import numpy as np
    >>> b = StreamBuffer("das", 2, 0, 100.0, window_samples=4, hop_samples=2)
    >>> [w.t_start_ns for w in b.push(np.zeros((6, 2), np.float32), 0, 0)]
    [0, 20000000]
    """

    def __init__(self, stream: str, n_channels: int, first_channel: int, sample_rate_hz: float,
                 *, window_samples: int, hop_samples: int, capacity: int | None = None) -> None:
        if hop_samples < 1 or window_samples < 1:
            raise ValueError("window_samples and hop_samples must be >= 1")
        self.stream = stream
        self.n_channels = n_channels
        self.first_channel = first_channel
        self.rate = float(sample_rate_hz)
        self.window = window_samples
        self.hop = hop_samples
        cap = max(capacity or 2 * window_samples, window_samples + hop_samples)
        self._buf = np.zeros((cap, n_channels), dtype=np.float32)
        self._bad = np.full(n_channels, -1, dtype=np.int64)  # last logical index with NaN/inf
        self._index = 0
        self._reset_state()
        self._after_gap = True

    def _reset_state(self) -> None:
        self._t0_ns: int | None = None  # time of logical sample 0
        self._origin = 0  # logical index of buffer row 0
        self._filled = 0  # rows in use
        self._next = 0  # logical index where the next window starts
        self._pending: deque[tuple[int, int]] = deque()  # (logical end, recv_ns) per frame
        self._bad[:] = -1

    @property
    def buffered(self) -> int:
        """Samples held that a future window may still use."""
        return self._origin + self._filled - self._next

    def time_of(self, k: int) -> int:
        """Time (ns) of logical sample `k` since the last reset."""
        assert self._t0_ns is not None
        return self._t0_ns + round(k * 1e9 / self.rate)

    def expected_t0_ns(self) -> int | None:
        """When the next frame should start if the stream is contiguous (None after reset)."""
        return None if self._t0_ns is None else self.time_of(self._origin + self._filled)

    def reset(self) -> None:
        """Forget everything buffered; the next window is marked ``after_gap``."""
        self._reset_state()
        self._after_gap = True

    def push(self, data: np.ndarray, t0_ns: int, recv_ns: int,
             nonfinite: np.ndarray | None = None) -> list[Window]:
        """Append a frame's samples ``(n, n_channels)``; return the windows now complete.

        The windows are views into the buffer: use them before the next `push`.
        """
        if data.ndim != 2 or data.shape[1] != self.n_channels:
            raise ValueError(f"frame has shape {data.shape}, buffer {self.n_channels} channels")
        self.reserve(data.shape[0])[...] = data
        return self.commit(data.shape[0], t0_ns, recv_ns, nonfinite)

    def reserve(self, n: int) -> np.ndarray:
        """The writable rows ``(n, n_channels)`` where the next `n` samples go: write a frame
        there (no copy of it elsewhere), then `commit` it. Windows handed out earlier are
        invalid from here on."""
        self._make_room(n)
        return self._buf[self._filled:self._filled + n]

    def commit(self, n: int, t0_ns: int, recv_ns: int,
               nonfinite: np.ndarray | None = None) -> list[Window]:
        """The `n` samples written to `reserve`'s rows (first one at `t0_ns`) are in; return
        the windows now complete (views into the buffer: use them before the next
        `reserve`)."""
        if self._t0_ns is None:
            self._t0_ns = t0_ns
        self._filled += n
        end = self._origin + self._filled
        if nonfinite is not None:
            self._bad[nonfinite] = end - 1
        self._pending.append((end, recv_ns))
        out = []
        while self._next + self.window <= end:
            out.append(self._emit())
        return out

    def _make_room(self, n: int) -> None:
        cap = self._buf.shape[0]
        if self._filled + n <= cap:
            return
        keep_from = self._next - self._origin
        kept = self._filled - keep_from
        if kept + n > cap:  # a frame larger than the slack: grow
            grown = np.zeros((kept + n + self.window, self.n_channels), dtype=np.float32)
            grown[:kept] = self._buf[keep_from:self._filled]
            self._buf = grown
        elif kept:
            self._buf[:kept] = self._buf[keep_from:self._filled]
        self._origin += keep_from
        self._filled = kept

    def _emit(self) -> Window:
        k0 = self._next
        k1 = k0 + self.window
        lo = k0 - self._origin
        view = self._buf[lo:lo + self.window]
        view.flags.writeable = False
        recv = []
        while self._pending and self._pending[0][0] <= k1:
            recv.append(self._pending.popleft()[1])
        bad = self._bad >= k0
        w = Window(
            stream=self.stream, data=view, t_start_ns=self.time_of(k0), t_end_ns=self.time_of(k1),
            first_channel=self.first_channel, recv_ns=tuple(recv),
            nonfinite=bad if bad.any() else None, after_gap=self._after_gap, index=self._index,
        )
        self._after_gap = False
        self._index += 1
        self._next += self.hop
        return w
