"""Issue 12: one forged frame must not blind a stream; counters saturate."""

from __future__ import annotations

import json

import numpy as np

from edge_agent import wire
from edge_agent.config import StreamConfig
from edge_agent.metrics import COUNTER_MAX, Metrics
from edge_agent.validate import RESYNC_RUN, FrameValidator

STREAM = StreamConfig(kind="das", first_channel=0, channels=4, sample_rate_hz=1000.0,
                      window_s=0.016, hop_s=0.008, bands_hz=[(10, 100), (100, 400)],
                      context_radius=1, feature_version=1)  # 16-sample windows: 1 segment
N = 8  # samples per frame, 8 ms
NOW = 1_780_000_000 * 10**9  # the gateway clock in these tests
FRAME_NS = N * 1_000_000


def frame(seq: int, t0_ns: int) -> bytes:
    return wire.encode(wire.StreamKind.DAS, seq, t0_ns, 1000.0, 0,
                       np.zeros((N, 4), np.float32))


def real(seq: int) -> bytes:
    return frame(seq, NOW + seq * FRAME_NS)


def forged() -> bytes:
    return frame(2**64 - 1, 2**62)


def accepted(v: FrameValidator, frames: list[bytes]) -> int:
    return sum(v.accept(f) is not None for f in frames)


def test_a_forged_far_future_frame_does_not_blind_the_stream() -> None:
    m = Metrics()
    v = FrameValidator(STREAM, m, max_clock_skew_s=300.0, clock_ns=lambda: NOW)
    assert accepted(v, [real(i) for i in range(10)]) == 10
    assert v.accept(forged()) is None
    assert accepted(v, [real(i) for i in range(10, 1010)]) == 1000
    snap = m.snapshot()
    assert snap["drops"] == {"clock_skew": 1}
    assert snap["gaps"] == 0


def test_without_the_skew_check_the_stream_resynchronises_after_a_run() -> None:
    """Even with the clock check off (or a forged frame dated within the bound), a forged
    frame costs at most RESYNC_RUN real frames, and the gap counter saturates."""
    m = Metrics()
    v = FrameValidator(STREAM, m)
    assert accepted(v, [real(i) for i in range(10)]) == 10
    assert v.accept(forged()) is not None  # nothing tells it apart without a clock
    n = accepted(v, [real(i) for i in range(10, 1010)])
    assert n == 1000 - (RESYNC_RUN - 1)
    snap = m.snapshot()
    assert snap["resyncs"] == 1
    assert snap["drops"]["out_of_order"] == RESYNC_RUN - 1
    assert snap["gaps"] == COUNTER_MAX
    # the health line stays writable: every counter fits an InfluxDB int64
    assert json.loads(json.dumps(snap))["gaps"] < 2**63


def test_scattered_old_frames_never_resynchronise() -> None:
    """Rejected frames must continue each other to count as a run: random replays do not."""
    m = Metrics()
    v = FrameValidator(STREAM, m)
    assert accepted(v, [real(i) for i in range(1000, 1010)]) == 10
    old = [real(i) for i in range(0, 200, 2)]  # every other seq: never a run of 2
    assert accepted(v, old) == 0
    assert m.snapshot()["drops"]["out_of_order"] == 100


def test_a_gateway_clock_a_day_behind_loses_at_most_one_run() -> None:
    """A gateway booted with a wrong clock sees every real frame a day 'in the future'."""
    m = Metrics()
    v = FrameValidator(STREAM, m, max_clock_skew_s=300.0, clock_ns=lambda: NOW - 86400 * 10**9)
    n = accepted(v, [real(i) for i in range(500)])
    assert n == 500 - (RESYNC_RUN - 1)
    assert m.snapshot()["drops"] == {"clock_skew": RESYNC_RUN - 1}
    # once following the stream, a further forged frame is still refused
    assert v.accept(forged()) is None
    assert accepted(v, [real(i) for i in range(500, 600)]) == 100


def test_a_clock_jump_during_a_continuous_stream_drops_nothing() -> None:
    clock = [NOW]
    v = FrameValidator(STREAM, Metrics(), max_clock_skew_s=300.0, clock_ns=lambda: clock[0])
    assert accepted(v, [real(i) for i in range(100)]) == 100
    clock[0] -= 86400 * 10**9  # NTP steps the gateway back a day
    assert accepted(v, [real(i) for i in range(100, 200)]) == 100
    clock[0] += 2 * 86400 * 10**9
    assert accepted(v, [real(i) for i in range(200, 300)]) == 100


def test_counters_saturate() -> None:
    m = Metrics()
    m.add("gaps", 2**64)
    m.add("gaps", 2**64)
    m.drop("x", 2**70)
    snap = m.snapshot()
    assert snap["gaps"] == COUNTER_MAX and snap["drops"]["x"] == COUNTER_MAX
