"""Streaming features: a window's rows with each das segment transformed once per stream.

A das window of spec version 2 is ``spec.segments`` hop-long segments and consecutive windows
of a stream overlap by all but one of them. `StreamingFeatures` keeps the sums of the
segments the next window still needs (`FeatureExtractor.segment_sums`) and transforms only
the new one; the rows are then `FeatureExtractor.combine` of the same sums that
`FeatureExtractor.transform` would compute from the whole window, so they are bit-identical
to it. Other profiles (dts, raw) and version 1 go through `FeatureExtractor.transform`.

Version 3's slow features also need the lowest band's power of the segments before the
window (`FeatureSpec.memory_segments`): they are kept here too, so a stream's rows depend on
its recent past (forgotten after a gap, as the kept segments are). The gateway, offline
scoring and training all compute rows through this class, so they stay bit-identical.
"""

from __future__ import annotations

import numpy as np

from edge_agent.features import FeatureExtractor
from edge_agent.types import Window


class StreamingFeatures:
    """``rows(window) -> (n_channels, spec.dim)`` float32 for one stream's windows in order.

    Segments are keyed by the window index plus their position in it (a window's hop is one
    segment) and dropped after a gap. A kept segment is checked against the new window's
    samples at its first and last row before it is reused; anything else is recomputed.
    """

    def __init__(self, extractor: FeatureExtractor) -> None:
        self.extractor = extractor
        self.spec = extractor.spec
        self._kept: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._low: dict[int, np.ndarray] = {}  # version 3: segment index -> lowest band power
        self.segments_transformed = 0

    def reset(self) -> None:
        self._kept.clear()
        self._low.clear()

    def rows(self, w: Window) -> np.ndarray:
        fx, spec = self.extractor, self.spec
        if spec.profile != "das" or spec.segments == 1:
            return fx.transform(w.data)
        if w.after_gap:
            self.reset()
        n = spec.segment_samples
        sums = []
        for j in range(spec.segments):
            seg = w.data[j * n:(j + 1) * n]
            kept = self._kept.get(w.index + j)
            if kept is None or not (np.array_equal(kept[1], seg[0])
                                    and np.array_equal(kept[2], seg[-1])):
                kept = (fx.segment_sums(seg), seg[0].copy(), seg[-1].copy())
                self._kept[w.index + j] = kept
                self.segments_transformed += 1
            sums.append(kept[0])
        for key in [k for k in self._kept if k <= w.index]:
            del self._kept[key]
        return fx.combine(sums, self._history(w.index, sums) if spec.memory_segments else None)

    def _history(self, index: int, sums: list[np.ndarray]) -> list[np.ndarray]:
        """The lowest band's power of the last `memory_segments` segments up to this
        window's last one (those seen since the last gap), oldest first."""
        last = index + len(sums) - 1
        for j, s in enumerate(sums):
            self._low[index + j] = s[:, 0]
        first = last - self.spec.memory_segments + 1
        for key in [k for k in self._low if k < first or k > last]:
            del self._low[key]
        return [self._low[k] for k in range(first, last + 1) if k in self._low]
