"""The blocked, in-place das extractor computes what the first, straightforward one did.

`_reference_das` is a verbatim copy of ``FeatureExtractor._das`` (with ``_with_context``)
as it was before the rewrite for speed: model packages were trained on its numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from edge_agent.features import _EPS, FeatureExtractor, FeatureSpec, local_median

RTOL, ATOL = 1e-4, 1e-5
#: the identity model packages are bound to; the rewrite must not move it
DEFAULT_SPEC_HASH = "145cc593921ba4234285b0d50d65a2e61b36be1625a0888fec03c088dddc919a"


def _reference_das(spec: FeatureSpec, x: np.ndarray) -> np.ndarray:
    n = spec.window_samples
    taper = np.hanning(n).astype(np.float32)[:, None]
    freqs_hz = np.fft.rfftfreq(n, 1.0 / spec.sample_rate_hz)
    freqs = freqs_hz.astype(np.float32)[:, None]
    band_bins = [(freqs_hz >= lo) & (freqs_hz < hi) for lo, hi in spec.bands_hz]
    # verbatim from here on (self._taper -> taper, self._freqs -> freqs, spec -> spec_, ...)
    x = np.asarray(x, dtype=np.float32)
    xd = x - x.mean(axis=0, keepdims=True)
    p2 = np.mean(xd * xd, axis=0)
    p4 = np.mean((xd * xd) ** 2, axis=0)
    spec_ = scipy.fft.rfft(xd * taper, axis=0)
    power = (spec_.real * spec_.real + spec_.imag * spec_.imag).astype(np.float32)
    power[0] = 0.0
    total = power.sum(axis=0) + _EPS
    cols = [np.log10(power[m].sum(axis=0) + _EPS) for m in band_bins]
    cols.append(0.5 * np.log10(p2 + _EPS))
    cols.append((freqs * power).sum(axis=0) / total / (spec.sample_rate_hz / 2))
    logp = np.log(power[1:] + _EPS)
    flat = np.exp(logp.mean(axis=0)) / (power[1:].mean(axis=0) + _EPS)
    cols.append(np.log10(flat + _EPS))
    cols.append(np.log10(p4 / (p2 * p2 + _EPS) + _EPS))
    base = np.stack(cols, axis=1)
    if spec.context_radius == 0:
        return base.astype(np.float32)
    padded = np.pad(base, [(spec.context_radius, spec.context_radius), (0, 0)], mode="edge")
    view = np.lib.stride_tricks.sliding_window_view(padded, 2 * spec.context_radius + 1, axis=0)
    ctx = base - np.median(view, axis=-1)
    return np.concatenate([base, ctx], axis=1).astype(np.float32)


def _window(spec: FeatureSpec, channels: int, seed: int = 0, offset: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((spec.window_samples, channels)) * 100 + offset).astype(np.float32)


def _check(spec: FeatureSpec, x: np.ndarray, **kw: int) -> None:
    got = FeatureExtractor(spec, **kw).transform(x)
    want = _reference_das(spec, x)
    assert got.dtype == np.float32 and got.shape == want.shape == (x.shape[1], spec.dim)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_the_spec_and_its_hash_did_not_change() -> None:
    assert FeatureSpec().hash == DEFAULT_SPEC_HASH


@pytest.mark.parametrize("channels", [1, 5, 129, 300, 1030])
def test_random_data(channels: int) -> None:
    spec = FeatureSpec()
    _check(spec, _window(spec, channels, seed=channels))


@pytest.mark.parametrize("block_channels", [2, 3, 7, 64, 4096])
def test_any_block_size_gives_the_same_rows(block_channels: int) -> None:
    spec = FeatureSpec()
    _check(spec, _window(spec, 150, seed=1), block_channels=block_channels)


def test_dead_channels() -> None:
    spec = FeatureSpec()
    x = _window(spec, 40, seed=2)
    x[:, 3] = 42.5  # constant: a dead channel with an offset
    x[:, 20] = 0.0
    x[:, 39] = -7.0  # the last one, alone in no block
    _check(spec, x, block_channels=13)


def test_pure_tone() -> None:
    spec = FeatureSpec()
    t = np.arange(spec.window_samples) / spec.sample_rate_hz
    tone = np.sin(2 * np.pi * 100.0 * t) * 1000.0
    x = np.repeat(tone[:, None], 12, axis=1).astype(np.float32)
    x[:, 5] *= 0.001
    _check(spec, x)


@pytest.mark.parametrize("channels", [1, 2, 5, 8])
def test_fewer_channels_than_the_context(channels: int) -> None:
    spec = FeatureSpec(context_radius=4)  # 2 * 4 + 1 = 9 > channels
    _check(spec, _window(spec, channels, seed=3))


def test_other_specs() -> None:
    for spec in (FeatureSpec(context_radius=0),
                 FeatureSpec(sample_rate_hz=1000.0, window_s=0.5, bands_hz=((0, 20), (20, 500)),
                             context_radius=2)):
        _check(spec, _window(spec, 70, seed=4))


def test_int16_scaled_input_and_a_non_contiguous_window() -> None:
    spec = FeatureSpec()
    rng = np.random.default_rng(5)
    frame = (np.round(rng.standard_normal((spec.window_samples * 2, 260)) * 3000) * 0.01)
    x = frame.astype(np.float32)[100:100 + spec.window_samples, 3:259]  # a view, like a Window
    _check(spec, x)


def test_threads_do_not_change_the_rows() -> None:
    spec = FeatureSpec()
    x = _window(spec, 300, seed=6)
    one = FeatureExtractor(spec).transform(x)
    np.testing.assert_array_equal(FeatureExtractor(spec, threads=2).transform(x), one)


def test_rows_are_fresh_arrays_not_scratch_buffers() -> None:
    spec = FeatureSpec()
    fx = FeatureExtractor(spec)
    a = fx.transform(_window(spec, 200, seed=7))
    keep = a.copy()
    fx.transform(_window(spec, 200, seed=8))
    np.testing.assert_array_equal(a, keep)


def test_local_median_matches_numpy_median_also_with_nan() -> None:
    rng = np.random.default_rng(9)
    values = rng.standard_normal((50, 3)).astype(np.float32)
    for radius in (1, 4):
        padded = np.pad(values, [(radius, radius), (0, 0)], mode="edge")
        view = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=0)
        np.testing.assert_array_equal(local_median(values, radius), np.median(view, axis=-1))
    values[10, 1] = np.nan
    padded = np.pad(values, [(4, 4), (0, 0)], mode="edge")
    view = np.lib.stride_tricks.sliding_window_view(padded, 9, axis=0)
    np.testing.assert_array_equal(local_median(values, 4), np.median(view, axis=-1))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        FeatureExtractor(FeatureSpec(), threads=0)
    with pytest.raises(ValueError):
        FeatureExtractor(FeatureSpec(), block_channels=1)
