"""The DAS optical noise floor (`OpticalFloor`), one part of `sensors_sim.das.DasBackground`.

Unit-variance Gaussian noise, white in time, averaged over the gauge length across channels.
Speed: each row is a random window of a pool of gauge-averaged Gaussian noise, with a random
sign, and a slice of the pool is redrawn at every `refresh`, so the whole pool turns over
every `POOL_TURNOVER` refreshes (one a chunk, a second). Gathering rows costs far less than
drawing fresh normals.
"""

from __future__ import annotations

import math

import numpy as np

POOL_MAX = 1 << 21  # samples in the optical-noise pool
POOL_TURNOVER = 64  # chunks (seconds) for the pool to be redrawn completely
_SIGNS = np.array([-1.0, 1.0], np.float32)


class OpticalFloor:
    """Rows of gauge-averaged noise for frames of ``samples`` x ``channels``.

    Parameters
    ----------
    channels, samples : int
        Frame shape is ``(samples, channels)``.
    gauge : int
        Channels averaged (the gauge length over the channel spacing).
    rng : numpy.random.Generator
        This part's own generator; the same state gives the same rows.
    """

    def __init__(self, channels: int, samples: int, gauge: int,
                 rng: np.random.Generator) -> None:
        self._rng, self.n, self._g = rng, samples, gauge
        self._pool_n = int(min(POOL_MAX, max(1 << 16, 64 * channels * samples)))
        self._raw = self._rng.standard_normal(self._pool_n + channels + self._g - 1, np.float32)
        self._avg = np.empty(self._pool_n + channels, np.float32)
        self._refresh_at = 0
        self._average(0, self._avg.size)
        self._windows = np.lib.stride_tricks.sliding_window_view(self._avg, channels)

    def fill(self, out: np.ndarray) -> None:
        """Write one frame of floor noise into ``out`` ``(samples, channels)``."""
        rows = self._rng.integers(0, self._pool_n, self.n)
        out[:] = self._windows[rows]  # (np.take would materialise the whole window view)
        out *= _SIGNS[self._rng.integers(0, 2, self.n)][:, None]

    def refresh(self) -> None:
        """Redraw the next slice of the pool (1 / `POOL_TURNOVER` of it)."""
        size = self._raw.size
        step = -(-size // POOL_TURNOVER)
        lo = self._refresh_at
        hi = min(lo + step, size)
        self._raw[lo:hi] = self._rng.standard_normal(hi - lo, np.float32)
        self._average(max(0, lo - self._g + 1), min(hi, self._avg.size))
        self._refresh_at = 0 if hi >= size else hi

    def _average(self, lo: int, hi: int) -> None:
        """``avg[i] = mean(raw[i:i+g])`` for ``lo <= i < hi``."""
        g = self._g
        cs = np.cumsum(self._raw[lo: hi + g - 1], dtype=np.float64)
        cs = np.concatenate(([0.0], cs))
        self._avg[lo:hi] = (cs[g:] - cs[:-g]) / math.sqrt(g)
