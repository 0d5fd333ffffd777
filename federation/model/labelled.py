"""What a gateway's operator labels do to its federated training (`edge_agent.labels`).

`local_data` reads a gateway's rows for one round:

* the normal buffer's rows (`edge_agent.normal_buffer`), without rows inside a labelled
  anomaly or maintenance window when the buffer knows where its rows came from;
* the journaled rows of labelled **false alarms**, split into a *held-back copy* (never
  trained on, used to measure the label's effect: every other label in time order, or with
  a single label every `HOLDOUT_EVERY`-th window) and training rows, repeated until they are
  ``label_share`` of them (a recurring pattern of a few dozen rows among thousands would
  otherwise barely move one round);
* the journaled rows of labelled **anomalies**, by kind, for recall (never trained on).

`label_effect` scores the held-back false-alarm rows and the labelled anomalies with a model
and a threshold: flagged windows (a window is flagged if any of its rows is over the
threshold), which the server sums over gateways for the round report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HOLDOUT_EVERY = 5


@dataclass
class LocalData:
    """One gateway's rows for a round (raw feature rows, float32)."""

    train: np.ndarray  # normal rows plus the false-alarm rows, oversampled: what is fitted
    held: np.ndarray  # held-out normal rows
    normal: np.ndarray  # the normal training rows alone
    fa_train: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    fa_held: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    fa_held_t: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    anomalies: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    excluded: int = 0  # normal rows dropped because a label covers them

    @property
    def n_false_alarm(self) -> int:
        return int(len(self.fa_train) + len(self.fa_held))

    def calibration_rows(self, *, labelled: bool = True) -> np.ndarray:
        """Rows for the error scale: every normal row and (``labelled``) each training
        false-alarm row once (false alarms feed the calibration). Score histograms (the
        thresholds) use normal rows only: a labelled pattern must not lift a threshold over
        the anomalies (measured: the 0.9999 quantile jumped 5x, leak recall fell to 0)."""
        parts = [self.normal, self.held] + ([self.fa_train] if labelled and
                                            len(self.fa_train) else [])
        return np.concatenate(parts)


def split_windows(t: np.ndarray, every: int = HOLDOUT_EVERY) -> np.ndarray:
    """bool mask of the rows whose window (start time) is held back: every ``every``-th
    distinct window, counted in time order."""
    uniq, inv = np.unique(t, return_inverse=True)
    return (np.arange(len(uniq)) % every == every - 1)[inv]


def oversample(rows: np.ndarray, n_normal: int, share: float) -> np.ndarray:
    """``rows`` repeated (whole copies, at least one) to about ``share`` of the training set."""
    if len(rows) == 0 or share <= 0:
        return rows[:0]
    want = share / max(1e-9, 1 - share) * n_normal
    return np.tile(rows, (max(1, int(round(want / len(rows)))), 1))


def exclusions(labels_path: str, stream: str) -> list[tuple[int, int, int, int]]:
    """The anomaly/maintenance ranges of a gateway's label book (none without one)."""
    if not labels_path or not Path(labels_path).exists():
        return []
    from edge_agent.labels import LabelBook

    with LabelBook(Path(labels_path)) as book:
        return book.exclusions(stream)


def local_data(normal: np.ndarray, held: np.ndarray, labels_path: str, *, stream: str,
               label_share: float = 0.5, excluded: int = 0) -> LocalData:
    """Add a gateway's labelled rows (`edge_agent.labels.LabelBook` at ``labels_path``;
    none if empty or missing) to its normal ``(train, held)`` rows."""
    out = LocalData(normal, held, normal, excluded=excluded)
    if not labels_path or not Path(labels_path).exists():
        return out
    from edge_agent.labels import LabelBook

    dim = normal.shape[1]
    with LabelBook(Path(labels_path)) as book:
        fa, t, _, which = book.labelled_rows(stream, dim, "false_alarm")
        rows, ta, kinds, _ = book.labelled_rows(stream, dim, "anomaly")
    hold = which % 2 == 1 if len(which) and which.max() > 0 else split_windows(t)
    out.fa_train, out.fa_held, out.fa_held_t = fa[~hold], fa[hold], t[hold]
    out.train = np.concatenate([normal, oversample(out.fa_train, len(normal), label_share)])
    for k in sorted(set(kinds)):
        pick = np.asarray([x == k for x in kinds], bool)
        out.anomalies[k or "unknown"] = (rows[pick], ta[pick])
    return out


def flagged_windows(scores: np.ndarray, t: np.ndarray, threshold: float) -> tuple[int, int]:
    """(windows, windows with a row over ``threshold``)."""
    if len(t) == 0:
        return 0, 0
    uniq, inv = np.unique(t, return_inverse=True)
    over = np.zeros(len(uniq), bool)
    np.logical_or.at(over, inv, np.asarray(scores) > threshold)
    return int(len(uniq)), int(over.sum())


def label_effect(data: LocalData, score: Any, threshold: float, prefix: str) -> dict[str, Any]:
    """``{prefix}fa_windows``/``{prefix}fa_flagged`` on the held-back false alarms and
    ``{prefix}recall_{kind}_windows``/``_flagged`` on labelled anomalies, for ``score`` (a
    function of rows) at ``threshold``."""
    out: dict[str, Any] = {}
    n, f = flagged_windows(score(data.fa_held) if len(data.fa_held) else np.empty(0),
                           data.fa_held_t, threshold)
    out[f"{prefix}fa_windows"], out[f"{prefix}fa_flagged"] = n, f
    for kind, (rows, t) in data.anomalies.items():
        n, f = flagged_windows(score(rows), t, threshold)
        out[f"{prefix}recall_{kind}_windows"], out[f"{prefix}recall_{kind}_flagged"] = n, f
    return out
