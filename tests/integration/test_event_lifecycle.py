"""Event lifecycle in real influxd: a withdrawn (merged) event leaves the anomaly list but
keeps its detail with ``merged_into``; the classifier's kind and confidence are stored."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from cloud import codec, schema
from cloud.influx import InfluxClient
from cloud.store import Store
from edge_agent.events import Event, event_id
from fiberwatch.services import Influxd

pytestmark = pytest.mark.integration
S = 1_000_000_000


def _event(start: int, ch: int, **kw: object) -> Event:
    d: dict[str, object] = dict(
        site="s1", gateway="g1", stream="das", start_ns=start, end_ns=start + 2 * S,
        ch_start=ch, ch_end=ch + 3, dist_start_m=float(ch), dist_end_m=float(ch + 3),
        peak_score=3.0, mean_score=2.0, threshold=1.0, severity="medium", class_hint="leak",
        kind="leak", kind_confidence=0.82, n_windows=2, model_version="1", model_hash="h",
        detected_ns=start + 3 * S)
    d.update(kw)
    return Event(id=event_id("s1", "g1", "das", start, ch), **d)  # type: ignore[arg-type]


def test_withdrawn_event_is_hidden_and_points_at_the_survivor(influxd: Influxd,
                                                              tmp_path: Path) -> None:
    now = time.time_ns()
    older, newer = _event(now - 60 * S, 10), _event(now - 58 * S, 30)
    withdrawn = dataclasses.replace(newer, merged_into=older.id)
    grown = dataclasses.replace(older, ch_end=33, n_windows=5)
    with InfluxClient(influxd.url) as client:
        schema.ensure_schema(client)
        for i, e in enumerate((older, newer, withdrawn, grown)):
            client.write(schema.DB, [codec.event_line(e, now + i)], rp=schema.RP_EVENTS)
        store = Store(client)
        listed = store.anomalies()
        detail = store.anomaly(newer.id)
    assert [e["id"] for e in listed] == [older.id]
    assert listed[0]["ch_end"] == 33
    assert listed[0]["kind"] == "leak" and listed[0]["kind_confidence"] == pytest.approx(0.82)
    assert detail is not None and detail["merged_into"] == older.id
