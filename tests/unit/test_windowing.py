"""StreamBuffer: windows are exact slices of the contiguous stream, never bridge a reset."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.windowing import StreamBuffer

RATE = 1000.0


def _buffer(window: int = 8, hop: int = 4, channels: int = 3, capacity: int | None = None):
    return StreamBuffer("das", channels, 10, RATE, window_samples=window, hop_samples=hop,
                        capacity=capacity)


def _ramp(start: int, n: int, channels: int = 3) -> np.ndarray:
    """Sample k of channel c is k * 10 + c: every value tells where it came from."""
    k = np.arange(start, start + n, dtype=np.float32)[:, None]
    return k * 10 + np.arange(channels, dtype=np.float32)[None, :]


def test_windows_are_the_right_samples_and_times() -> None:
    b = _buffer()
    out = []
    for i in range(5):
        for w in b.push(_ramp(i * 5, 5), t0_ns=i * 5_000_000, recv_ns=100 + i):
            j = w.index  # views are valid until the next push: check them now
            np.testing.assert_array_equal(w.data, _ramp(j * 4, 8))
            assert w.t_start_ns == j * 4_000_000
            assert w.t_end_ns == (j * 4 + 8) * 1_000_000
            assert w.first_channel == 10
            out.append(w)
    assert [w.index for w in out] == [0, 1, 2, 3, 4]
    assert out[0].after_gap and not any(w.after_gap for w in out[1:])


def test_window_views_are_read_only() -> None:
    b = _buffer()
    (w,) = b.push(_ramp(0, 8), 0, 0)
    with pytest.raises(ValueError):
        w.data[0, 0] = 1.0


def test_reset_discards_and_marks_the_next_window() -> None:
    b = _buffer()
    assert len(b.push(_ramp(0, 8), 0, 0)) == 1
    b.reset()
    assert b.push(_ramp(100, 6), 100_000_000, 0) == []  # not enough contiguous samples yet
    (w,) = b.push(_ramp(106, 2), 106_000_000, 0)
    assert w.after_gap and w.t_start_ns == 100_000_000
    np.testing.assert_array_equal(w.data, _ramp(100, 8))


def test_recv_times_go_to_the_first_window_that_holds_the_frame() -> None:
    b = _buffer(window=8, hop=4)
    assert b.push(_ramp(0, 4), 0, recv_ns=1) == []
    (w0,) = b.push(_ramp(4, 6), 4_000_000, recv_ns=2)  # ends at 10 > 8: not complete in w0
    assert w0.recv_ns == (1,)
    (w1,) = b.push(_ramp(10, 2), 10_000_000, recv_ns=3)
    assert w1.recv_ns == (2, 3)


def test_nonfinite_channels_are_marked_while_in_the_window() -> None:
    b = _buffer(window=4, hop=4)
    bad = np.array([False, True, False])
    (w0,) = b.push(_ramp(0, 4), 0, 0, nonfinite=bad)
    assert w0.nonfinite is not None and w0.nonfinite.tolist() == [False, True, False]
    (w1,) = b.push(_ramp(4, 4), 4_000_000, 0)
    assert w1.nonfinite is None


def test_a_frame_larger_than_the_buffer_grows_it() -> None:
    b = _buffer(window=4, hop=2, capacity=6)
    out = b.push(_ramp(0, 50), 0, 0)
    assert len(out) == 24
    for w in out:
        np.testing.assert_array_equal(w.data, _ramp(2 * w.index, 4))


def test_channel_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        _buffer().push(np.zeros((4, 2), np.float32), 0, 0)


@settings(max_examples=60, deadline=None)
@given(
    window=st.integers(2, 12), hop=st.integers(1, 12),
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=30),
    resets=st.sets(st.integers(0, 29), max_size=4),
)
def test_every_window_is_contiguous_and_hops_exactly(window, hop, sizes, resets) -> None:
    hop = min(hop, window)
    b = _buffer(window=window, hop=hop)
    k = 0
    since_reset = 0
    expected_windows = 0
    for i, n in enumerate(sizes):
        if i in resets:
            b.reset()
            expected_windows += 0 if since_reset < window else (since_reset - window) // hop + 1
            since_reset = 0
            k += 1000  # the stream jumped
        for w in b.push(_ramp(k, n), t0_ns=k * 1_000_000, recv_ns=0):
            start = int(w.data[0, 0]) // 10
            np.testing.assert_array_equal(w.data, _ramp(start, window))  # no bridged gap
            assert w.t_start_ns == start * 1_000_000
        k += n
        since_reset += n
    expected_windows += 0 if since_reset < window else (since_reset - window) // hop + 1
    assert b._index == expected_windows


def test_reserve_and_commit_are_push_without_a_copy_of_the_frame() -> None:
    a, b = _buffer(), _buffer()
    got_a, got_b = [], []
    for k in range(0, 30, 3):
        frame = _ramp(k, 3)
        got_a += [(w.index, w.data.copy()) for w in a.push(frame, 0, k)]
        rows = b.reserve(3)
        rows[...] = frame  # e.g. a frame decoded straight into the buffer
        got_b += [(w.index, w.data.copy()) for w in b.commit(3, 0, k)]
    assert len(got_a) == len(got_b) > 3
    for (ia, da), (ib, db) in zip(got_a, got_b, strict=True):
        assert ia == ib and np.array_equal(da, db)
