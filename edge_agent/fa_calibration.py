"""False alarms feed threshold calibration (issue 16): a floor per channel group from the
operator's ``false_alarm`` labels.

When an operator labels an event a false alarm, the gateway has the feature rows of its
flagged windows in its journal (`edge_agent.labels.LabelBook.record_flagged`). The running
model scores those rows again; in every channel group the label covers, a window now flags
only when its group score exceeds ``margin`` x the highest score the labelled pattern
reached there. Groups no false alarm covers keep their thresholds exactly (floor 0), so
leak/sand recall elsewhere on the fibre is untouched; on the labelled channels an anomaly
still alerts when it scores above the benign pattern (a leak under a valve that sings louder
than the leak would not: the operator's label says that level is normal there).

The floor is recomputed when a label arrives (the book's ``revision``) or the model changes
(its scores are in another model's units): immediately, before any federated round; the
round's model then learns the pattern and the floor follows it. The floor only ever mutes
flags, it never adds one; an ``mv`` stream (one row per window) has no channel groups and
no floor.

What it does is counted (`FalseAlarmFloor` counters; the health heartbeat's ``fa_mutes_active``,
``fa_muted_windows`` and ``fa_muted_groups``): how many channel groups have a floor now, and
how many flagged windows and group-windows a floor has muted since the agent started.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MARGIN = 1.25  # over the labelled pattern's highest score: its later recurrences vary
MAX_ROWS = 20_000  # journaled rows scored per recompute (the most recent labels' first)


class FalseAlarmFloor:
    """Per-group score floors from a `LabelBook`'s false-alarm labels of one stream.

    ``floor(detector, model_key)`` is cached per (model, label revision); None while there
    is nothing labelled (the common case costs one tuple comparison).

    Counters (written by the processing thread, read by the health loop: plain ints):
    ``active_groups`` channel groups with a floor now (0 while None), ``muted_windows``
    windows with at least one flag muted, ``muted_groups`` groups muted, summed over windows.
    """

    def __init__(self, book: Any, stream: str, *, dim: int, first_channel: int,
                 channels: int, group_size: int, margin: float = MARGIN) -> None:
        self.book, self.stream, self.dim, self.margin = book, stream, dim, margin
        self.first_channel, self.channels, self.group_size = first_channel, channels, group_size
        self.n_groups = -(-channels // group_size)
        self._key: tuple[Any, int] | None = None
        self._floor: np.ndarray | None = None
        self.active_groups = self.muted_windows = self.muted_groups = 0

    def floor(self, detector: Any, model_key: Any) -> np.ndarray | None:
        """float ``(n_groups,)`` floors (0 where no false alarm is labelled), or None."""
        key = (model_key, int(getattr(self.book, "revision", 0)))
        if key != self._key:
            self._key = key
            self._floor = self._compute(detector)
            self.active_groups = 0 if self._floor is None else int(np.count_nonzero(self._floor))
        return self._floor

    def mute(self, group_scores: np.ndarray, flagged: np.ndarray, detector: Any,
             model_key: Any) -> np.ndarray:
        """``flagged`` without the groups scoring at or under their floor (counted). The
        floor is brought up to date on every window, flagged or not, so ``active_groups``
        follows a new label or model at once."""
        floor = self.floor(detector, model_key)
        if floor is None or not flagged.any():
            return flagged
        kept = flagged & (group_scores > floor)
        muted = int(np.count_nonzero(flagged)) - int(np.count_nonzero(kept))
        if muted:
            self.muted_windows += 1
            self.muted_groups += muted
        return kept

    def _compute(self, detector: Any) -> np.ndarray | None:
        rows, channels = self.book.false_alarm_rows(self.stream, self.dim, max_rows=MAX_ROWS)
        local = channels - self.first_channel
        ok = (local >= 0) & (local < self.channels)
        if not ok.any():
            return None
        try:
            scores = np.asarray(detector.score(rows[ok]), np.float64)
        except (ValueError, RuntimeError) as exc:  # rows of another feature spec
            log.warning("event=fa_floor_not_scored stream=%s error=%s", self.stream, exc)
            return None
        scores = np.where(np.isfinite(scores), scores, 0.0)
        floor = np.zeros(self.n_groups)
        np.maximum.at(floor, local[ok] // self.group_size, scores)
        floor *= self.margin
        groups = np.flatnonzero(floor)
        log.info("event=fa_floor stream=%s model=%s rows=%d groups=%s floor_max=%.4g",
                 self.stream, getattr(detector, "version", "?"), int(ok.sum()),
                 ",".join(map(str, groups.tolist())), float(floor.max()))
        return floor
