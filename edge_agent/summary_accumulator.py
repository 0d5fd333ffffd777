"""The summary stage: per-group figures accumulated between two ~1 Hz `FeatureSummary`."""

from __future__ import annotations

import numpy as np

from edge_agent.config import StreamConfig
from edge_agent.summary import FeatureSummary
from edge_agent.types import Scored


class SummaryAccumulator:
    """Max score, mean energy, thresholds and flags per group between two summaries."""

    def __init__(self, site: str, gateway: str, stream: StreamConfig) -> None:
        self.site, self.gateway, self.stream = site, gateway, stream
        self._score: np.ndarray | None = None
        self._energy_sum: np.ndarray | None = None
        self._n = 0
        self._flagged: np.ndarray | None = None
        self._thr: np.ndarray | None = None
        self._t_ns = 0

    def add(self, s: Scored, energy: np.ndarray, thresholds: np.ndarray) -> None:
        if self._score is None or self._score.shape != s.group_scores.shape:
            self._score = s.group_scores.astype(np.float64)
            self._energy_sum = energy.astype(np.float64)
            self._flagged = s.flagged.copy()
            self._n = 1
        else:
            assert self._energy_sum is not None and self._flagged is not None
            np.maximum(self._score, s.group_scores, out=self._score)
            self._energy_sum += energy
            self._flagged |= s.flagged
            self._n += 1
        self._thr = thresholds
        self._t_ns = s.window.t_end_ns

    def take(self, model_version: str) -> FeatureSummary | None:
        """The summary since the last `take` (None if no window arrived)."""
        if self._score is None or self._n == 0:
            return None
        assert self._energy_sum is not None and self._flagged is not None
        assert self._thr is not None
        st = self.stream
        out = FeatureSummary(
            site=self.site, gateway=self.gateway, stream=st.kind, t_ns=self._t_ns,
            ch_start=st.first_channel, group_size=st.group_size,
            score=np.round(self._score, 4).tolist(),
            energy=np.round(self._energy_sum / self._n, 4).tolist(),
            threshold=np.round(self._thr, 4).tolist(), model_version=model_version,
            flagged=np.flatnonzero(self._flagged).tolist(),
        )
        self._score, self._n = None, 0
        return out
