"""The health heartbeat the agent builds (`edge_agent.main._Health`): per-stream latency, and
the message satisfies the cloud's health validation (`cloud.ingest.parse`)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from cloud import codec
from cloud.ingest.parse import HealthRecord, parse
from edge_agent import topics
from edge_agent.main import _Health
from edge_agent.metrics import Metrics
from edge_agent.summary import HEALTH_KEYS, HEALTH_OPTIONAL_KEYS


class _Slot:
    def state(self) -> dict:
        return {"model_version": "m1", "model_hash": "ab" * 32, "fallback": False}


def _health(metrics: Metrics) -> _Health:
    cfg = SimpleNamespace(gateway=SimpleNamespace(site="s1", id="well-a"))
    return _Health(cfg, metrics, SimpleNamespace(qsize=lambda: 0),  # type: ignore[arg-type]
                   SimpleNamespace(depth=lambda: 0, evicted=0),
                   {"das": _Slot(), "dts": _Slot()})


def test_health_carries_latency_per_stream_and_passes_the_cloud_check() -> None:
    m = Metrics()
    m.add("frames", 21)
    m.record_latency(np.full(20, 450.0), 1.0, "das")
    m.record_latency(np.full(5, 3500.0), 1.0, "dts")
    msg = _health(m).build()
    assert set(HEALTH_KEYS) <= set(msg) and set(HEALTH_OPTIONAL_KEYS) <= set(msg)
    by = msg["latency_ms_by_stream"]
    assert by["das"]["p99"] <= 450.0 < 3000 < by["dts"]["p99"] <= 3500.0
    assert msg["latency_ms"]["p99"] > 3000  # the mixture, as before
    wire = json.loads(json.dumps(msg, allow_nan=False))
    record = parse(topics.health("s1", "well-a"), json.dumps(wire).encode())
    assert isinstance(record, HealthRecord)
    fields = codec.health_fields(record.data, 1)
    assert fields["latency_p99_ms_das"] == by["das"]["p99"]
    assert fields["latency_p99_ms_dts"] == by["dts"]["p99"]


def test_health_counts_false_alarm_mutes_and_the_cloud_stores_them() -> None:
    """Active mutes: the streams' floors now; muted windows/groups: the agent's metrics."""
    m = Metrics()
    m.add("fa_muted_windows", 3)
    m.add("fa_muted_groups", 5)
    pipes = {"das": SimpleNamespace(model_health=SimpleNamespace(take=list),
                                    fa_mutes_active=lambda: 2),
             "dts": SimpleNamespace(model_health=SimpleNamespace(take=list),
                                    fa_mutes_active=lambda: 1)}
    h = _health(m)
    h.pipelines = pipes
    msg = h.build()
    assert (msg["fa_mutes_active"], msg["fa_muted_windows"], msg["fa_muted_groups"]) == (3, 3, 5)
    record = parse(topics.health("s1", "well-a"), json.dumps(msg).encode())
    assert isinstance(record, HealthRecord)
    fields = codec.health_fields(record.data, 1)
    assert (fields["fa_mutes_active"], fields["fa_muted_windows"],
            fields["fa_muted_groups"]) == (3, 3, 5)
    quiet = _health(Metrics()).build()  # no label book: nothing muted, nothing active
    assert (quiet["fa_mutes_active"], quiet["fa_muted_windows"],
            quiet["fa_muted_groups"]) == (0, 0, 0)


def test_a_quiet_interval_sends_an_empty_mapping() -> None:
    msg = _health(Metrics()).build()
    assert msg["latency_ms_by_stream"] == {} and msg["latency_ms"] == {"p50": 0.0, "p99": 0.0}
    record = parse(topics.health("s1", "well-a"), json.dumps(msg).encode())
    assert "latency_p99_ms_das" not in codec.health_fields(record.data, 1)


def test_startup_heap_is_frozen_out_of_the_collectors_reach() -> None:
    import gc

    from edge_agent.main import freeze_startup_heap

    try:
        n = freeze_startup_heap()
        assert n == gc.get_freeze_count() > 10_000  # numpy, pydantic, paho... are imported
        assert gc.get_count()[2] == 0
    finally:
        gc.unfreeze()


def test_reset_latency_forgets_what_came_before() -> None:
    m = Metrics()
    m.record_latency(np.full(10, 900.0), 900.0, "das")
    m.reset_latency()
    m.record_latency(np.full(10, 5.0), 5.0, "das")
    snap = m.snapshot()
    assert snap["latency_ms"]["count"] == 10 and snap["latency_ms"]["max"] == 5.0
    assert snap["latency_newest_ms"]["max"] == 5.0
