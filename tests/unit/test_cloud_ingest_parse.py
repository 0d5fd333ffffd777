"""Parsing MQTT messages: valid ones become records, invalid ones a counted reason."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud import codec
from cloud.ingest.lines import raw_lines
from cloud.ingest.parse import (
    EventRecord,
    FeaturesRecord,
    HealthRecord,
    Malformed,
    ModelStateRecord,
    _fast_arrays,
    parse,
)
from edge_agent import topics
from edge_agent.events import Event, event_id
from edge_agent.summary import FeatureSummary, SummaryError

T = 1_700_000_000_000_000_000


def make_event(**over: Any) -> Event:
    d = dict(id=event_id("s1", "g1", "das", T, 10), site="s1", gateway="g1", stream="das",
             start_ns=T, end_ns=T + 10**9, ch_start=10, ch_end=20, dist_start_m=10.0,
             dist_end_m=20.5, peak_score=3.5, mean_score=2.0, threshold=1.0, severity="high",
             class_hint="leak", n_windows=3, model_version="1.0.0", model_hash="abc",
             detected_ns=T + 5)
    d.update(over)
    return Event(**d)


def summary_dict(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = dict(site="s1", gateway="g1", stream="das", t_ns=T, ch_start=0,
                             group_size=4, score=[0.1, 0.2, 0.3], energy=[1.0, 2.0, 3.0],
                             threshold=[0.5, 0.5, 0.5], model_version="1.0.0", flagged=[2],
                             schema=1)
    d.update(over)
    return d


def health_dict(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "schema": 1, "site": "s1", "gateway": "g1", "t_ns": T, "status": "ok", "uptime_s": 5,
        "frames_per_s": 10.0, "samples_per_s": 1e6, "queue_depth": 0, "drops": {"queue_full": 2},
        "gaps": 1, "latency_ms": {"p50": 1.0, "p99": 3.0}, "outbox_depth": 0,
        "outbox_evicted": 0, "model_version": "1.0.0", "model_hash": "abc", "rss_mb": 55.5}
    d.update(over)
    return d


FEATURES = topics.features("s1", "g1", "das")


def reason(topic: str, payload: bytes) -> str:
    with pytest.raises(Malformed) as info:
        parse(topic, payload)
    return info.value.reason


def test_event_round_trips() -> None:
    e = make_event()
    r = parse(topics.events("s1", "g1"), e.to_json())
    assert isinstance(r, EventRecord) and r.gateway_event_id == e.id
    assert r.event == dataclasses.replace(e, id=codec.cloud_event_id("s1", "g1", e.id))


@pytest.mark.parametrize(("payload", "expected"), [
    (b"{nope", "event:json"),
    (b"[1, 2]", "event:schema"),
    (b'{"id": "x"}', "event:schema"),
])
def test_bad_events_have_reasons(payload: bytes, expected: str) -> None:
    assert reason(topics.events("s1", "g1"), payload) == expected


def test_event_from_another_gateway_is_refused() -> None:
    payload = make_event(gateway="g2").to_json()
    assert reason(topics.events("s1", "g1"), payload) == "event:topic_mismatch"


def test_summary_fast_path() -> None:
    r = parse(FEATURES, json.dumps(summary_dict()).encode())
    assert isinstance(r, FeaturesRecord)
    assert (r.site, r.gateway, r.stream, r.t_ns, r.ch_start, r.group_size) == (
        "s1", "g1", "das", T, 0, 4)
    np.testing.assert_array_equal(r.score, [0.1, 0.2, 0.3])
    assert r.score.dtype == np.float64 and r.flagged == 1


def test_summary_slow_path_accepts_what_the_contract_accepts() -> None:
    # bools are ints to the contract (the fast path packs them as doubles too)
    r = parse(FEATURES, json.dumps(summary_dict(score=[True, False, True])).encode())
    assert isinstance(r, FeaturesRecord)
    np.testing.assert_array_equal(r.score, [1.0, 0.0, 1.0])


@pytest.mark.parametrize(("over", "expected"), [
    ({"score": []}, "features:schema"),
    ({"score": [1.0, 2.0]}, "features:schema"),
    ({"score": [1.0, "x", 3.0]}, "features:schema"),
    ({"score": [1.0, None, 3.0]}, "features:schema"),
    ({"energy": [[1.0], [2.0], [3.0]]}, "features:schema"),
    ({"flagged": [7]}, "features:schema"),
    ({"flagged": ["a"]}, "features:schema"),
    ({"group_size": 0}, "features:schema"),
    ({"stream": "xyz"}, "features:schema"),
    ({"extra": 1}, "features:schema"),
    ({"t_ns": "soon"}, "features:schema"),
    ({"t_ns": -5}, "features:schema"),
    ({"group_size": 1.5}, "features:schema"),
    ({"model_version": ""}, "features:schema"),
    ({"schema": 2}, "features:schema"),
    ({"gateway": "g9"}, "features:topic_mismatch"),
    ({"stream": "dts"}, "features:topic_mismatch"),
])
def test_bad_summaries_have_reasons(over: dict[str, Any], expected: str) -> None:
    assert reason(FEATURES, json.dumps(summary_dict(**over)).encode()) == expected


def test_summary_missing_key_and_non_finite() -> None:
    d = summary_dict()
    del d["energy"]
    assert reason(FEATURES, json.dumps(d).encode()) == "features:schema"
    payload = json.dumps(summary_dict()).replace("0.2", "NaN").encode()
    assert reason(FEATURES, payload) in ("features:json", "features:schema")
    assert reason(FEATURES, b"1e400") == "features:json"  # orjson: out of range is not JSON
    assert reason(FEATURES, b"[1]") == "features:schema"
    assert reason(FEATURES, b"") == "features:empty"


values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70),
                   st.booleans(), st.none(), st.text(max_size=2))
arrays = st.one_of(st.lists(values, max_size=4), st.lists(st.floats(-1e6, 1e6), min_size=1,
                                                            max_size=4), values)


@settings(max_examples=100, deadline=None)
@given(score=arrays, energy=arrays, threshold=arrays,
       flagged=st.one_of(st.lists(st.one_of(st.integers(-2, 5), st.floats(0, 3)), max_size=3),
                         st.none()),
       group_size=st.one_of(st.integers(-1, 3), st.floats(0, 3)),
       ch_start=st.one_of(st.integers(-1, 3), st.booleans()))
def test_fast_path_accepts_only_what_the_contract_accepts(score, energy, threshold, flagged,
                                                          group_size, ch_start) -> None:
    d = summary_dict(score=score, energy=energy, threshold=threshold, flagged=flagged,
                     group_size=group_size, ch_start=ch_start)
    fast = _fast_arrays(d)
    if fast is None:
        return
    FeatureSummary(**d)  # must not raise
    for got, key in zip(fast, ("score", "energy", "threshold"), strict=True):
        np.testing.assert_array_equal(got, np.asarray(d[key], dtype=np.float64))


def test_contract_rejections_are_never_fast() -> None:
    d = summary_dict(score=[1.0, float("inf"), 2.0])
    with pytest.raises(SummaryError):
        FeatureSummary(**d)
    assert _fast_arrays(d) is None


def test_health() -> None:
    r = parse(topics.health("s1", "g1"), json.dumps(health_dict()).encode())
    assert isinstance(r, HealthRecord) and r.data["rss_mb"] == 55.5
    assert "latency_ms_by_stream" not in r.data  # optional: older agents do not send it


def test_health_with_false_alarm_mutes() -> None:
    mutes = {"fa_mutes_active": 2, "fa_muted_windows": 37, "fa_muted_groups": 52}
    r = parse(topics.health("s1", "g1"), json.dumps(health_dict(**mutes)).encode())
    assert isinstance(r, HealthRecord) and {k: r.data[k] for k in mutes} == mutes
    assert "fa_mutes_active" not in parse(topics.health("s1", "g1"),
                                          json.dumps(health_dict()).encode()).data


def test_health_with_latency_per_stream() -> None:
    by = {"das": {"p50": 120.0, "p99": 481}, "dts": {"p50": 2512.0, "p99": 4030.0}}
    r = parse(topics.health("s1", "g1"), json.dumps(health_dict(latency_ms_by_stream=by)).encode())
    assert isinstance(r, HealthRecord) and r.data["latency_ms_by_stream"] == by
    empty = parse(topics.health("s1", "g1"),
                  json.dumps(health_dict(latency_ms_by_stream={})).encode())
    assert isinstance(empty, HealthRecord)


@pytest.mark.parametrize(("over", "drop", "expected"), [
    ({}, "rss_mb", "health:schema"),
    ({"frames_per_s": "fast"}, None, "health:schema"),
    ({"latency_ms": {"p50": 1}}, None, "health:schema"),
    ({"latency_ms_by_stream": {"das": {"p99": 1.0}}}, None, "health:schema"),
    ({"latency_ms_by_stream": {"das": {"p50": 1.0, "p99": "slow"}}}, None, "health:schema"),
    ({"latency_ms_by_stream": {"radar": {"p50": 1.0, "p99": 2.0}}}, None, "health:schema"),
    ({"latency_ms_by_stream": [1.0, 2.0]}, None, "health:schema"),
    ({"latency_ms_by_stream": None}, None, "health:schema"),
    ({"drops": {"x": "y"}}, None, "health:schema"),
    ({"t_ns": 1.5}, None, "health:schema"),
    ({"schema": 3}, None, "health:schema"),
    ({"site": "s2"}, None, "health:topic_mismatch"),
    ({"fa_mutes_active": -1}, None, "health:schema"),
    ({"fa_muted_windows": "3"}, None, "health:schema"),
    ({"fa_muted_groups": 1.5}, None, "health:schema"),
    ({"fa_muted_groups": True}, None, "health:schema"),
    ({"fa_muted_windows": 2**64}, None, "health:schema"),
    ({"fa_mutes_active": None}, None, "health:schema"),
])
def test_bad_health(over: dict[str, Any], drop: str | None, expected: str) -> None:
    d = health_dict(**over)
    if drop:
        del d[drop]
    assert reason(topics.health("s1", "g1"), json.dumps(d).encode()) == expected


def test_model_state_and_other_topics() -> None:
    ok = {"model_version": "1.0.0", "model_hash": "abc", "status": "serving", "x": [1]}
    r = parse(topics.model_state("s1", "g1"), json.dumps(ok).encode())
    assert isinstance(r, ModelStateRecord) and r.data == ok and r.gateway == "g1"
    bad = json.dumps({"model_version": "1.0.0"}).encode()
    assert reason(topics.model_state("s1", "g1"), bad) == "model_state:schema"
    assert reason(topics.model_state("s1", "g1"), b"") == "model_state:empty"
    assert reason("other/topic/a/b/c", b"{}") == "topic"
    assert reason(topics.raw("s1", "g1", "das"), b"{}") == "topic"


def test_a_batch_gets_the_lines_its_summaries_get_one_by_one() -> None:
    """`raw_lines` (the writer's whole-batch builder) against `raw_line` (one summary,
    `codec.features_line` packing each array itself): JSON and packed summaries, other
    lengths, out-of-float16-range scores (clipped), thresholds repeated and changed."""
    rng = np.random.default_rng(3)
    payloads = []
    for k in range(12):
        n = (5, 5, 7)[k % 3]
        score = (rng.gamma(2.0, 0.3, n) * (1e5 if k == 4 else 1)).astype(np.float32)
        s = FeatureSummary(site="s1", gateway=f"g{k % 2}", stream="das", t_ns=T + k,
                           ch_start=0, group_size=1, score=score.astype(float).tolist(),
                           energy=rng.normal(-2, 9, n).tolist(),
                           threshold=[0.5 + (k // 6)] * n, model_version="1.0.0", flagged=[1])
        payloads.append((topics.features("s1", f"g{k % 2}", "das"),
                         s.to_packed() if k % 4 else s.to_json()))
    records = [parse(t, p) for t, p in payloads]
    assert all(isinstance(r, FeaturesRecord) for r in records)
    lines = raw_lines(records)  # type: ignore[arg-type]
    assert lines == [r.raw_line() for r in records]  # type: ignore[union-attr]
    assert len(set(lines)) == len(lines) and "score_max=65504" not in lines[4]
    assert codec.unpack([lines[4].split('score="')[1].split('"')[0]], 5, "<f2").max() == 65504
    assert raw_lines([]) == []


def test_a_buffered_summary_counts_its_arrays_and_its_line_to_come() -> None:
    r = parse(FEATURES, json.dumps(summary_dict()).encode())
    assert isinstance(r, FeaturesRecord)
    assert r.nbytes > r.score.nbytes * 3 + len(r.raw_line()) // 2
