"""Decode/validate stage: every bad frame is counted under its reason; nothing raises."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent import wire
from edge_agent.config import StreamConfig
from edge_agent.metrics import Metrics
from edge_agent.validate import FrameValidator

STREAM = StreamConfig(kind="das", first_channel=100, channels=4, sample_rate_hz=1000.0,
                      window_s=0.016, hop_s=0.008, bands_hz=[(10, 100), (100, 400)],
                      context_radius=1, feature_version=1)  # 16-sample windows: 1 segment
N = 8  # samples per frame


def frame(seq: int, *, kind=wire.StreamKind.DAS, rate=1000.0, first=100, channels=4,
          data: np.ndarray | None = None, t0_ns: int | None = None) -> bytes:
    if data is None:
        data = np.full((N, channels), float(seq), np.float32)
    t0 = seq * N * 1_000_000 if t0_ns is None else t0_ns
    return wire.encode(kind, seq, t0, rate, first, data)


@pytest.fixture
def v() -> FrameValidator:
    return FrameValidator(STREAM, Metrics())


def drops(v: FrameValidator) -> dict[str, int]:
    return v._metrics.snapshot()["drops"]


def test_contiguous_frames_pass_and_only_the_first_resets(v) -> None:
    a = [v.accept(frame(i)) for i in range(3)]
    assert all(x is not None for x in a)
    assert [x.reset for x in a] == [True, False, False]
    assert drops(v) == {}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"garbage", "malformed:short"),
        (frame(0)[:-1] + b"\x00", "malformed:checksum"),
        (frame(0, kind=wire.StreamKind.DTS), "stream_kind"),
        (frame(0, first=0), "channels"),
        (frame(0, channels=5), "channels"),
        (frame(0, rate=2000.0), "sample_rate"),
    ],
)
def test_bad_frames_are_dropped_and_counted(v, payload: bytes, reason: str) -> None:
    assert v.accept(payload) is None
    assert drops(v) == {reason: 1}


def test_a_gap_is_counted_in_missing_frames_and_resets(v) -> None:
    v.accept(frame(0))
    acc = v.accept(frame(4))
    assert acc is not None and acc.reset
    assert v._metrics.snapshot()["gaps"] == 3


def test_duplicates_and_out_of_order_frames_are_dropped(v) -> None:
    for i in range(5):
        v.accept(frame(i))
    assert v.accept(frame(4)) is None
    assert v.accept(frame(2)) is None
    assert drops(v) == {"duplicate": 2}
    assert v.accept(frame(5)) is not None  # the stream goes on


def test_old_unseen_sequence_number_is_out_of_order(v) -> None:
    v.accept(frame(0))
    v.accept(frame(100))  # gap
    assert v.accept(frame(50)) is None
    assert drops(v) == {"out_of_order": 1}


def test_restart_with_lower_seq_but_later_time_resets(v) -> None:
    for i in range(1000, 1003):
        v.accept(frame(i))
    acc = v.accept(frame(0, t0_ns=10**12))
    assert acc is not None and acc.reset
    assert v._metrics.snapshot()["restarts"] == 1 and drops(v) == {}


def test_nonfinite_samples_are_zeroed_and_marked_not_dropped(v) -> None:
    data = np.ones((N, 4), np.float32)
    data[2, 1] = np.nan
    data[5, 3] = np.inf
    acc = v.accept(frame(0, data=data))
    assert acc is not None
    values, nonfinite = v.values(acc.frame)
    assert nonfinite is not None and nonfinite.tolist() == [False, True, False, True]
    assert np.isfinite(values).all() and values[2, 1] == 0.0 and values[2, 0] == 1.0
    assert drops(v) == {"nonfinite": 1}
    assert v._metrics.snapshot()["nonfinite_samples"] == 2


def test_finite_frames_have_no_mask(v) -> None:
    acc = v.accept(frame(0))
    assert acc is not None and v.values(acc.frame)[1] is None


def test_random_bytes_never_raise(v) -> None:
    rng = np.random.default_rng(0)
    good = frame(0)
    for _ in range(300):
        b = bytearray(good)
        for i in rng.integers(0, len(b), size=3):
            b[i] = rng.integers(0, 256)
        v.accept(bytes(b[: rng.integers(0, len(b) + 1)]))
    assert sum(drops(v).values()) > 0
