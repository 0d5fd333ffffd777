"""The blocked, in-place, segmented das extractor computes what straightforward code does.

`_reference_das` is a verbatim copy of ``FeatureExtractor._das`` (with ``_with_context``)
as it was before the rewrite for speed: version 1 model packages were trained on its numbers.
`_reference_das_v2` is the version 2 definition written plainly: the same sums per hop-long
segment, averaged over the window's segments (Welch style).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.fft

from edge_agent.features import (
    _EPS,
    FeatureExtractor,
    FeatureSpec,
    FeatureSpecError,
    available_kernels,
    default_kernel,
    local_median,
)

RTOL, ATOL = 1e-4, 1e-5
#: the identities model packages are bound to; a rewrite must not move them
V1_SPEC_HASH = "145cc593921ba4234285b0d50d65a2e61b36be1625a0888fec03c088dddc919a"
V2_SPEC_HASH = "c67db11fa9b1ef52e071396d7d9ce0fc8d85cffb35804f81a280c27604928fb6"
DEFAULT_SPEC_HASH = "6572aab8544e83054d701ab99ca5a94ce35cd2509854e4e8fe2a2711a1bc2f8a"  # version 3


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


def _reference_das_v2(spec: FeatureSpec, x: np.ndarray) -> np.ndarray:
    n = spec.hop_samples
    freqs = np.fft.rfftfreq(n, 1.0 / spec.sample_rate_hz)
    taper = np.hanning(n).astype(np.float32)[:, None]
    parts = []
    for seg in np.split(np.asarray(x, np.float32), spec.window_samples // n):
        # float32 up to the power spectrum, as in v1's reference: the round-off floor of a
        # float32 FFT is what the far bands of a pure tone hold
        xd = seg - seg.mean(axis=0, keepdims=True)
        spec_ = scipy.fft.rfft(xd * taper, axis=0)
        power = (spec_.real * spec_.real + spec_.imag * spec_.imag).astype(np.float64)
        power[0] = 0.0
        xd = xd.astype(np.float64)
        bands = [power[(freqs >= lo) & (freqs < hi)].sum(axis=0) for lo, hi in spec.bands_hz]
        parts.append(np.stack([*bands, (xd**2).mean(axis=0), (xd**4).mean(axis=0),
                               power.sum(axis=0), (freqs[:, None] * power).sum(axis=0),
                               np.log(power[1:] + _EPS).mean(axis=0)], axis=1))
    s = np.mean(parts, axis=0).astype(np.float32)  # the features from float32 sums
    nb = len(spec.bands_hz)
    p2, p4, total, moment1, mean_log = s[:, nb:].T
    cols = [np.log10(s[:, j] + _EPS) for j in range(nb)]
    cols.append(0.5 * np.log10(p2 + _EPS))
    cols.append(moment1 / (total + _EPS) / (spec.sample_rate_hz / 2))
    cols.append(np.log10(np.exp(mean_log) / (total / (freqs.size - 1) + _EPS) + _EPS))
    cols.append(np.log10(p4 / (p2 * p2 + _EPS) + _EPS))
    if spec.version >= 3:  # a lone window: its own segments' lowest band
        low = np.stack([p[:, 0] for p in parts]).astype(np.float32)
        cols.append(np.log10(low.max(axis=0) + _EPS))
        cols.append(cols[-1] - np.log10(low.min(axis=0) + _EPS))
    base = np.stack(cols, axis=1)
    if spec.context_radius == 0:
        return base.astype(np.float32)
    return np.concatenate([base, base - local_median(base, spec.context_radius)],
                          axis=1).astype(np.float32)


def _window(spec: FeatureSpec, channels: int, seed: int = 0, offset: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((spec.window_samples, channels)) * 100 + offset).astype(np.float32)


def _check(spec: FeatureSpec, x: np.ndarray, atol: float = ATOL, **kw: Any) -> None:
    if spec.version == 1:  # v1's reference rounds in float32 throughout: ~1.2e-5 off float64
        atol = max(atol, 2e-5)  # on the flatness context column (the C kernel: ~1e-6)
    for kernel in available_kernels():
        _check_kernel(spec, x, atol, kernel=kernel, **kw)


def _check_kernel(spec: FeatureSpec, x: np.ndarray, atol: float, **kw: Any) -> None:
    got = FeatureExtractor(spec, **kw).transform(x)
    want = _reference_das(spec, x) if spec.version == 1 else _reference_das_v2(spec, x)
    assert got.dtype == np.float32 and got.shape == want.shape == (x.shape[1], spec.dim)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol)


def test_the_spec_and_its_hash_did_not_change() -> None:
    assert FeatureSpec().hash == DEFAULT_SPEC_HASH
    assert FeatureSpec(version=2).hash == V2_SPEC_HASH
    assert FeatureSpec(version=1).hash == V1_SPEC_HASH
    assert FeatureSpec().version == 3 and FeatureSpec().segments == 2


@pytest.mark.parametrize("version", [1, 2, 3])
def test_both_versions_on_random_data(version: int) -> None:
    spec = FeatureSpec(version=version)
    _check(spec, _window(spec, 300, seed=11))


def test_version_2_needs_whole_hops_and_unknown_versions_are_refused() -> None:
    with pytest.raises(FeatureSpecError, match="whole hops"):
        FeatureSpec(window_s=1.0, hop_s=0.3)
    FeatureSpec(window_s=1.0, hop_s=0.3, version=1)
    FeatureSpec(profile="dts", sample_rate_hz=1.0, window_s=10.0, hop_s=3.0, bands_hz=())
    with pytest.raises(FeatureSpecError, match="version"):
        FeatureSpec(version=4)


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
    # a dead channel's flatness is log10(EPS / EPS): float32 log/exp of EPS vs float64
    _check(spec, x, atol=1e-4, block_channels=13)
    _check(FeatureSpec(version=1), x, atol=1e-4, block_channels=13)


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


@pytest.mark.parametrize("kernel", available_kernels())
def test_threads_do_not_change_the_rows(kernel: str) -> None:
    spec = FeatureSpec()
    x = _window(spec, 300, seed=6)
    one = FeatureExtractor(spec, kernel=kernel).transform(x)
    two = FeatureExtractor(spec, threads=2, kernel=kernel).transform(x)
    np.testing.assert_array_equal(two, one)


def test_the_installed_package_has_the_c_kernel_and_it_is_the_default() -> None:
    # the README's commands install the package, which compiles `edge_agent/_dasfeat.c`;
    # a build that silently lost it would run the slower numpy passes on every gateway
    assert available_kernels() == ("c", "numpy") and default_kernel() == "c"


def test_the_kernels_agree_and_bad_arguments_are_refused() -> None:
    spec = FeatureSpec()
    x = _window(spec, 257, seed=12)
    c = FeatureExtractor(spec, kernel="c").transform(x)
    np.testing.assert_allclose(c, FeatureExtractor(spec, kernel="numpy").transform(x),
                               rtol=1e-5, atol=2e-5)
    with pytest.raises(ValueError, match="kernel"):
        FeatureExtractor(spec, kernel="fortran")
    from edge_agent import _dasfeat
    z = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="float32"):
        _dasfeat.prep(z.astype(np.float64), z[:, 0], z.T.copy(), z[0], z[0])
    with pytest.raises(ValueError, match="shapes"):
        _dasfeat.prep(z, np.zeros(3, np.float32), z.T.copy(), z[0], z[0])
    with pytest.raises(ValueError, match="edges"):
        _dasfeat.power(np.zeros((3, 8), np.float32), np.zeros(4, np.float32),
                       np.array([0, 9], np.float32), np.zeros((3, 3), np.float32),
                       np.zeros((3, 3), np.float32), 1e-12)


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


@pytest.mark.parametrize("shape", [(2048, 12), (9, 3), (5, 2), (1, 12), (300,)])
@pytest.mark.parametrize("ties", [False, True])
def test_the_median_of_9_network_selects_what_partition_selects(shape: tuple, ties: bool
                                                                ) -> None:
    x = np.random.default_rng(len(shape) + shape[0]).standard_normal(shape).astype(np.float32)
    if ties:
        x = np.round(x)  # many equal values
    padded = np.pad(x, [(4, 4)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    view = np.lib.stride_tricks.sliding_window_view(padded, 9, axis=0)
    np.testing.assert_array_equal(local_median(x, 4), np.partition(view, 4, axis=-1)[..., 4])
