"""A labelled recurring false alarm stops after one federated round; leak/sand recall holds.

Real Flower (a SuperLink and two gateway SuperNodes on loopback, `fiberwatch.label_round`),
real int8 packages. The scenario is `fiberwatch.bench._labels` (the ``labels`` benchmark's):
a benign valve transient that the running model flags, labelled false alarm on one gateway;
one round with the labels; both packages scored on fresh valve strokes and on fresh leak
and sand events.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fiberwatch.bench import _labels

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_labelled_recurring_false_alarm_stops_after_one_round(tmp_path: Path) -> None:
    plan = _labels.QUICK
    prep = _labels.prepare(tmp_path / "data", plan)
    assert prep["labelled_false_alarms"] == plan.labelled_events  # the model did flag it
    summary = _labels.label_round(tmp_path / "round", plan, prep)
    f = _labels.evaluate(plan, prep["package"], summary["package"],
                         Path(prep["gateways"][0]["labels"]))

    assert f["fa_events_before"] >= f["valve_strokes"] - 1  # the pattern alerts, recurring
    assert f["fa_events_after"] == 0 and f["fa_windows_after"] == 0  # ... and no longer
    # the labelled gateway's false-alarm calibration (`edge_agent.fa_calibration`): muted at
    # once with the running model, and with the round's model
    assert f["fa_events_label"] == 0 and f["fa_events_calibrated"] == 0
    for kind in ("leak", "sand"):
        r = f["recall"][kind]
        assert r["before"] == r["after"] == r["label"] == r["calibrated"] == 1.0, (kind, r)

    rep = summary["labels"]  # the round's own report, on the gateways' held-back copy
    assert rep["fa_windows"] > 0 and rep["fa_after"] < rep["fa_before"]
    assert rep["recall_leak_after"] >= rep["recall_leak_before"] > 0
    assert rep["recall_sand_after"] >= rep["recall_sand_before"] > 0
    saved = json.loads((tmp_path / "round" / "results" / "summary.json").read_text())
    assert saved["labels"] == rep and saved["version"] == summary["version"]
