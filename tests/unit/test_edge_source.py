"""Source stage: the bounded frame queue sheds in blocks under both policies; the MQTT
callbacks only enqueue."""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest

from edge_agent.config import GatewayConfig
from edge_agent.metrics import LatencyHistogram, Metrics, RateLimitedLog
from edge_agent.mqtt_source import FrameQueue, MqttSource
from edge_agent.types import RawMessage


def msg(i: int) -> RawMessage:
    return RawMessage("t", bytes([i % 256]), i)


def drain(q: FrameQueue) -> list[int]:
    out = []
    while (m := q.get_nowait()) is not None:
        out.append(m.recv_ns)
    return out


def test_drop_oldest_sheds_to_half_and_keeps_the_newest() -> None:
    m = Metrics()
    q = FrameQueue(8, "drop_oldest", m)
    for i in range(9):
        q.offer(msg(i))
    # full at 8 -> the 4 oldest go, then 8 is queued: one contiguous run, the stream current
    assert drain(q) == [4, 5, 6, 7, 8]
    assert m.snapshot()["drops"] == {"queue_full": 4}


def test_drop_newest_rejects_until_half_drained() -> None:
    m = Metrics()
    q = FrameQueue(8, "drop_newest", m)
    for i in range(10):
        q.offer(msg(i))  # 8 and 9 rejected
    for _ in range(3):
        q.get_nowait()  # depth 5: still above half, keep rejecting
    q.offer(msg(10))
    q.get_nowait()  # depth 4 = half: accept again
    q.offer(msg(11))
    assert drain(q) == [4, 5, 6, 7, 11]
    assert m.snapshot()["drops"] == {"queue_full": 3}


def test_the_byte_bound_counts_as_full_too() -> None:
    m = Metrics()
    q = FrameQueue(100, "drop_oldest", m, max_bytes=1000)
    for i in range(6):
        q.offer(RawMessage("t", bytes(300), i))
    # the 4th would exceed 1000 bytes: shed to <= 500 bytes (0, 1 go); the same at the 6th
    assert drain(q) == [4, 5]
    assert m.snapshot()["drops"] == {"queue_full": 4}
    assert q._bytes == 0


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        FrameQueue(4, "drop_random", Metrics())


def test_get_times_out_with_none() -> None:
    assert FrameQueue(2, "drop_oldest", Metrics()).get(timeout=0.01) is None


def _cfg(**broker) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "gateway": {"site": "s", "id": "g", "data_dir": "/tmp/unused"},
        "broker": broker,
        "model": {"allow_unsigned": True},
        "streams": [{"kind": "das", "channels": 4, "sample_rate_hz": 1000, "window_s": 0.1,
                     "hop_s": 0.05, "bands_hz": [[10, 100]]},
                    {"kind": "dts", "channels": 4, "sample_rate_hz": 1, "window_s": 10,
                     "hop_s": 10}],
    })


def test_source_subscribes_in_on_connect_and_on_message_only_enqueues() -> None:
    q = FrameQueue(4, "drop_oldest", Metrics())
    src = MqttSource(_cfg(), q)
    assert src.topics == ["fiberwatch/v1/s/g/raw/das", "fiberwatch/v1/s/g/raw/dts"]
    calls = []
    fake = types.SimpleNamespace(subscribe=lambda subs: calls.append(subs))
    ok = types.SimpleNamespace(is_failure=False)
    src._on_connect(fake, None, None, ok, None)
    assert calls == [[("fiberwatch/v1/s/g/raw/das", 0), ("fiberwatch/v1/s/g/raw/dts", 0)]]
    src._on_message(fake, None, types.SimpleNamespace(topic="x", payload=b"abc"))
    item = q.get_nowait()
    assert item is not None and item.topic == "x" and item.payload == b"abc" and item.recv_ns > 0


def test_missing_password_variable_is_a_config_error(monkeypatch) -> None:
    from edge_agent.mqtt_client import MqttConfigError

    monkeypatch.delenv("FW_TEST_PW", raising=False)
    with pytest.raises(MqttConfigError, match="FW_TEST_PW"):
        MqttSource(_cfg(username="u", password_env="FW_TEST_PW"), FrameQueue(1, "drop_oldest",
                                                                             Metrics()))


def test_latency_histogram_percentiles() -> None:
    h = LatencyHistogram()
    for v in range(1, 101):
        h.record(float(v))
    assert 45 <= h.percentile(50) <= 57
    assert 95 <= h.percentile(99) <= 100
    assert LatencyHistogram().percentile(50) == 0.0


def test_latency_histogram_to_dict_keeps_the_distribution() -> None:
    h = LatencyHistogram()
    h.record_many(np.array([1.02, 1.05, 50.0, 2000.0]))
    d = h.to_dict()
    assert sum(d["counts"]) == d["count"] == 4 and d["max_ms"] == 2000.0
    assert d["counts"][0] == 2 and len(d["upper_ms"]) == 3
    assert all(a < b for a, b in zip(d["upper_ms"], d["upper_ms"][1:], strict=False))
    assert 1.05 <= d["upper_ms"][0] < 1.2 and 2000.0 <= d["upper_ms"][-1] < 2300.0
    assert LatencyHistogram().to_dict() == {"upper_ms": [], "counts": [], "count": 0,
                                            "max_ms": 0.0}


def test_metrics_interval_and_wait_for() -> None:
    m = Metrics()
    m.add("frames", 10)
    m.add("samples", 1000)
    iv = m.interval()
    assert iv["frames_per_s"] > 0
    t = threading.Thread(target=lambda: m.add("windows", 3))
    t.start()
    assert m.wait_for(lambda c: c["windows"] >= 3, timeout=10)
    t.join()
    assert not m.wait_for(lambda c: c["windows"] >= 4, timeout=0.01)


def test_rate_limited_log_counts_suppressed(caplog) -> None:
    now = [0.0]
    rl = RateLimitedLog(__import__("logging").getLogger("t"), 10.0, clock=lambda: now[0])
    with caplog.at_level("WARNING"):
        for _ in range(5):
            rl.warning("k", "x=%d", 1)
        now[0] = 11.0
        rl.warning("k", "x=%d", 2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["x=1 suppressed=0", "x=2 suppressed=4"]


def test_metrics_latency_per_stream_beside_the_mixture() -> None:
    m = Metrics()
    m.record_latency(np.full(95, 400.0), 10.0, "das")  # das frames wait <= one 0.5 s hop
    m.record_latency(np.full(5, 4000.0), 10.0, "dts")  # dts frames up to a 5 s hop
    m.record_latency(np.array([1.0]), 1.0)  # no stream: the mixture only
    iv = m.interval()
    assert iv["latency_ms"]["p99"] > 3000  # the mixture's p99 is a dts frame
    by = iv["latency_ms_by_stream"]
    assert set(by) == {"das", "dts"} and set(by["das"]) == {"p50", "p99"}
    assert 390 <= by["das"]["p50"] <= by["das"]["p99"] <= 400.0
    assert 3900 <= by["dts"]["p99"] <= 4000.0
    assert m.snapshot()["latency_ms"]["count"] == 101  # the cumulative histogram: every frame
    m.record_latency(np.full(3, 300.0), 5.0, "das")
    iv = m.interval()  # recent: since the previous call; a stream with no window is absent
    assert list(iv["latency_ms_by_stream"]) == ["das"]
    assert iv["latency_ms_by_stream"]["das"]["p99"] <= 300.0
    assert m.interval()["latency_ms_by_stream"] == {}
