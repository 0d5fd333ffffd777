"""Causal score smoothing for ``mv`` (process) streams: an exponentially weighted moving
average of the per-window score and of its per-column contributions.

Process faults (a closing valve, a leak, a fouling exchanger) persist for many rows while
single-row noise does not: the EWMA ``m_t = a * s_t + (1 - a) * m_(t-1)``, ``a = 2 / (span
+ 1)``, keeps a persistent fault above the threshold through its noisy stretches and
averages isolated spikes away. It is causal and costs O(columns) per window, so the gateway
and ``fiberwatch score`` run the same code (`edge_agent.pipeline.StreamPipeline`). The span
comes with the model package (manifest ``threshold.smoothing``), and the package's
calibration scores are smoothed the same way (`ewma`), so the calibrated threshold is a
threshold on the smoothed score. Contributions are averaged with the same weights, so they
still sum to the smoothed score. The average starts at the first finite score; non-finite
scores pass through unsmoothed and leave the average as it was.
"""

from __future__ import annotations

import math

import numpy as np

#: the longest span a package may ask for (rows)
MAX_SPAN = 10_000


def alpha(span: int) -> float:
    """The EWMA weight of the newest score for a span of ``span`` rows (1 = no smoothing)."""
    if not 1 <= span <= MAX_SPAN:
        raise ValueError(f"smoothing span must be in [1, {MAX_SPAN}], got {span}")
    return 2.0 / (span + 1.0)


def ewma(scores: np.ndarray, span: int) -> np.ndarray:
    """The smoothed series of ``scores`` in time order (as `ScoreSmoother` gives it)."""
    s = ScoreSmoother(span)
    return np.array([s.update(float(v))[0] for v in np.asarray(scores, np.float64)])


class ScoreSmoother:
    """The running EWMA of one stream's window scores (and contributions)."""

    def __init__(self, span: int) -> None:
        self.span = int(span)
        self._a = alpha(self.span)
        self._mean: float | None = None
        self._contrib: np.ndarray | None = None

    def update(self, score: float, contrib: np.ndarray | None = None,
               ) -> tuple[float, np.ndarray | None]:
        """``(smoothed score, smoothed contributions)`` after one window."""
        if self.span == 1 or not math.isfinite(score):
            return score, contrib
        if self._mean is None:
            self._mean = score
        else:
            self._mean += self._a * (score - self._mean)
        if contrib is not None and np.isfinite(contrib).all():
            c = np.asarray(contrib, np.float64)
            if self._contrib is None or self._contrib.shape != c.shape:
                self._contrib = c.copy()
            else:
                self._contrib += self._a * (c - self._contrib)
            contrib = self._contrib.astype(np.float32)
        return self._mean, contrib

    def reset(self) -> None:
        """Forget the history (a gap in the stream)."""
        self._mean, self._contrib = None, None
