"""`StreamingFeatures`: each das segment transformed once, rows bit-identical to a whole-window
`FeatureExtractor.transform`, across gaps, thread counts and odd callers."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.feature_stream import StreamingFeatures
from edge_agent.features import FeatureExtractor, FeatureSpec
from edge_agent.windowing import StreamBuffer

SPEC = FeatureSpec(sample_rate_hz=1000.0, window_s=1.0, hop_s=0.25, context_radius=3, version=2,
                   bands_hz=((1, 50), (50, 200), (200, 500)))  # 4 segments per window
CH = 150


def _stream(samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((samples, CH)) * 100 + 7).astype(np.float32)


def _windows(x: np.ndarray, gap_at: int | None = None):
    b = StreamBuffer("das", CH, 0, SPEC.sample_rate_hz, window_samples=SPEC.window_samples,
                     hop_samples=SPEC.hop_samples)
    for k in range(0, x.shape[0], 50):
        if gap_at is not None and k == gap_at:
            b.reset()
        yield from b.push(x[k:k + 50], k * 1_000_000, 0)


@pytest.mark.parametrize("threads", [1, 3])
def test_streamed_rows_equal_whole_window_rows_and_each_segment_is_done_once(threads: int
                                                                             ) -> None:
    x = _stream(6000)
    ref = FeatureExtractor(SPEC)
    sf = StreamingFeatures(FeatureExtractor(SPEC, threads=threads, block_channels=32))
    n = 0
    for w in _windows(x):
        np.testing.assert_array_equal(sf.rows(w), ref.transform(np.array(w.data)))
        n += 1
    assert n == 21 and sf.segments_transformed == n + SPEC.segments - 1
    sf.extractor.close()


def test_a_gap_starts_over_and_the_rows_stay_identical() -> None:
    x = _stream(6000, seed=1)
    ref = FeatureExtractor(SPEC)
    sf = StreamingFeatures(FeatureExtractor(SPEC))
    ws = list((w.after_gap, sf.rows(w), np.array(w.data)) for w in _windows(x, gap_at=2500))
    assert sum(g for g, _, _ in ws) == 2
    for _, rows, data in ws:
        np.testing.assert_array_equal(rows, ref.transform(data))
    # 2 runs: 2500 samples -> 7 windows, 3500 -> 11 windows; each run's windows share segments
    assert sf.segments_transformed == (7 + 3) + (11 + 3)


def test_windows_out_of_order_or_from_another_stream_are_recomputed() -> None:
    ref = FeatureExtractor(SPEC)
    sf = StreamingFeatures(FeatureExtractor(SPEC))
    a = list(_windows(_stream(3000, seed=2)))
    b = list(_windows(_stream(3000, seed=3)))
    for w in (a[0], b[1], a[2], a[1], b[3]):  # same indices, other samples: never reused
        np.testing.assert_array_equal(sf.rows(w), ref.transform(np.array(w.data)))


def test_version_1_and_other_profiles_take_the_whole_window() -> None:
    spec = FeatureSpec(version=1, sample_rate_hz=1000.0, window_s=1.0, hop_s=0.25,
                       bands_hz=SPEC.bands_hz)
    sf = StreamingFeatures(FeatureExtractor(spec))
    b = StreamBuffer("das", 20, 0, 1000.0, window_samples=1000, hop_samples=250)
    ws = b.push(_stream(2000)[:, :20], 0, 0)
    for w in ws:
        np.testing.assert_array_equal(sf.rows(w), FeatureExtractor(spec).transform(w.data))
    assert sf.segments_transformed == 0 and len(ws) == 5


def test_a_band_narrower_than_a_segments_bins_is_a_spec_error() -> None:
    from edge_agent.features import FeatureSpecError

    with pytest.raises(FeatureSpecError, match="no FFT bin"):
        FeatureSpec(window_s=1.0, hop_s=0.05)  # 100-sample segments: bins every 20 Hz
    FeatureSpec(window_s=1.0, hop_s=0.05, version=1)  # one 2000-sample segment: fine


V3 = FeatureSpec(sample_rate_hz=1000.0, window_s=1.0, hop_s=0.25, context_radius=3,
                 bands_hz=((1, 50), (50, 200), (200, 500)))  # version 3: 4 s of slow memory


def _slow(rows: np.ndarray) -> np.ndarray:
    i = V3.names.index("lf_max")
    return rows[:, i:i + 2]


def test_version_3_adds_slow_features_over_the_last_seconds_of_segments() -> None:
    assert V3.version == 3 and V3.memory_segments == 16 and V3.dim == 2 * (3 + 4 + 2)
    x = _stream(8000, seed=2)
    x[3000:3250] *= 30  # one loud quarter-second burst (a slug pulse)
    fx = FeatureExtractor(V3)
    sf = StreamingFeatures(FeatureExtractor(V3))
    rows = {w.index: (sf.rows(w), fx.transform(np.array(w.data)), w) for w in _windows(x)}
    quiet = max(_slow(alone)[:, 0].max() for _, alone, w in rows.values()
                if not 3000 - V3.window_samples < w.index * V3.hop_samples < 3250)
    for k, (streamed, alone, _w) in rows.items():
        # the window's own features never change; the slow ones remember the burst
        np.testing.assert_array_equal(streamed[:, :7], alone[:, :7])
        start = k * V3.hop_samples
        if start + V3.window_samples <= 3000 or start >= 3250 + 4000:
            assert _slow(streamed)[:, 0].max() < quiet + 0.5  # no burst within the last 4 s
        elif start >= 3250 and start + V3.window_samples <= 3000 + 4000:  # after it, within 4 s
            assert np.all(_slow(streamed)[:, 0] > _slow(alone)[:, 0] + 2)
            assert np.all(_slow(streamed)[:, 1] > 2)


def test_version_3_rows_restart_after_a_gap_and_are_reproducible() -> None:
    x = _stream(6000, seed=3)
    a = [StreamingFeatures(FeatureExtractor(V3)) for _ in range(2)]
    first = [(w.after_gap, a[0].rows(w)) for w in _windows(x, gap_at=2500)]
    second = [a[1].rows(w) for w in _windows(x, gap_at=2500)]
    for (_, r1), r2 in zip(first, second, strict=True):
        np.testing.assert_array_equal(r1, r2)
    after = next(i for i, (g, _) in enumerate(first) if g and i > 0)
    fresh = StreamingFeatures(FeatureExtractor(V3))
    w0 = next(w for w in _windows(x[2500:]))
    np.testing.assert_array_equal(first[after][1], fresh.rows(w0))


def test_other_profiles_keep_version_2_and_its_hash() -> None:
    dts = FeatureSpec(profile="dts", sample_rate_hz=1.0, window_s=10.0, hop_s=5.0, bands_hz=())
    assert dts.version == 2
    assert dts.hash == FeatureSpec(profile="dts", sample_rate_hz=1.0, window_s=10.0, hop_s=5.0,
                                   bands_hz=(), version=2).hash
