"""The server's side of a round that learns from operator labels, and its report.

A run with ``init-weights`` (the model the gateways run now, e.g. the previous run's
``final_weights.npz``) continues from that model instead of a fresh one. The ClientApp
trains on each gateway's normal rows plus its labelled false alarms, without its labelled
anomalies and maintenance (`federation.model.labelled`). Around the rounds:

1. before: ``evaluate.histogram`` of the starting model (normal rows) -> ``threshold_before``;
2. after: the final calibration's histograms -> ``threshold_after``;
3. ``evaluate.labels`` with both models and thresholds: every gateway counts its held-back
   false-alarm windows and labelled anomaly windows flagged by each.

`effect_report` sums them into the run's label report (``summary.json`` ``labels``, the last
round's ``fl_round`` point, the API's ``/rounds`` and the dashboard's round panel)::

    fa_windows, fa_before, fa_after            held-back labelled false-alarm windows; flagged
    recall_<kind>_windows, _before, _after     labelled anomaly windows of <kind>; flagged
    threshold_before, threshold_after, threshold_level

A threshold is the model's score quantile at ``label-level`` (the gateway's default floor,
``threshold.floor_quantile`` = 0.9999), from the same merged histograms a package gets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MessageType, RecordDict
from flwr.serverapp import Grid

from federation.flower import compression
from federation.flower.rounds import Timing, broadcast

log = logging.getLogger(__name__)


def load_weights(path: str) -> list[np.ndarray]:
    """The running model's arrays: an ``.npz`` written by the ServerApp
    (``final_weights.npz``), or a ``fiberwatch model train`` checkpoint (same arch)."""
    if not str(path).endswith(".npz"):
        from federation.model.task import get_weights
        from federation.model.train import load_checkpoint

        return get_weights(load_checkpoint(Path(path))["model"])
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def threshold(hists: Sequence[Sequence[int]], level: float) -> float:
    from federation.registry.package import quantiles_from_histograms

    return float(quantiles_from_histograms(hists, levels=(level,))[f"{level:g}"])


def before_threshold(grid: Grid, nodes: Sequence[int], arrays: ArrayRecord, *, level: float,
                     quorum: int, timing: Timing) -> float:
    """The starting model's threshold on the gateways' normal rows (no labelled rows)."""
    content = RecordDict({"config": ConfigRecord({
        "phase": "histogram",
        "weights": compression.pack_weights(arrays.to_numpy_ndarrays())})})
    replies = broadcast(grid, nodes, f"{MessageType.EVALUATE}.histogram", content,
                        quorum=quorum, timing=timing)
    return threshold([list(r.content.metric_records["histogram"]["hist"])  # type: ignore[arg-type]
                      for r in replies], level)


def label_effect(grid: Grid, nodes: Sequence[int], before: ArrayRecord, after: ArrayRecord, *,
                 thresholds: tuple[float, float], level: float, quorum: int, timing: Timing
                 ) -> dict[str, Any]:
    """Sum of the gateways' ``evaluate.labels`` counts (see the module docstring)."""
    content = RecordDict({"config": ConfigRecord({
        "phase": "labels", "threshold-before": thresholds[0], "threshold-after": thresholds[1],
        "weights-before": compression.pack_weights(before.to_numpy_ndarrays()),
        "weights": compression.pack_weights(after.to_numpy_ndarrays())})})
    replies = broadcast(grid, nodes, f"{MessageType.EVALUATE}.labels", content,
                        quorum=quorum, timing=timing)
    total: dict[str, int] = {}
    for r in replies:
        for k, v in dict(r.content.metric_records["labels"]).items():
            total[k] = total.get(k, 0) + int(cast(int, v))
    return effect_report(total, thresholds, level)


def effect_report(total: dict[str, int], thresholds: tuple[float, float],
                  level: float = 0.9999) -> dict[str, Any]:
    """The label report from summed client counts (keys of `labelled.label_effect`)."""
    out: dict[str, Any] = {
        "fa_windows": total.get("before_fa_windows", 0),
        "fa_before": total.get("before_fa_flagged", 0),
        "fa_after": total.get("after_fa_flagged", 0),
        "excluded_rows": total.get("excluded_rows", 0),
        "threshold_before": thresholds[0], "threshold_after": thresholds[1],
        "threshold_level": level}
    kinds = sorted({k[len("before_recall_"):-len("_windows")] for k in total
                    if k.startswith("before_recall_") and k.endswith("_windows")})
    for kind in kinds:
        out[f"recall_{kind}_windows"] = total[f"before_recall_{kind}_windows"]
        out[f"recall_{kind}_before"] = total.get(f"before_recall_{kind}_flagged", 0)
        out[f"recall_{kind}_after"] = total.get(f"after_recall_{kind}_flagged", 0)
    return out
