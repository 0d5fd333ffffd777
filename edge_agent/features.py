"""The feature spec and the feature extractor: a public contract.

A `FeatureSpec` fully defines the feature row of one channel in one window; its `hash` is
stored in every model package, and a gateway refuses a model built for another spec.
The same `FeatureExtractor` runs on the gateway, in offline scoring and in training, so the
three see identical numbers for identical windows.

Profiles
--------
``das``  per channel over a window of ``n_samples x n_channels``: log10 band energies of the
         Hann-windowed spectrum for each band in ``bands_hz``, log10 RMS, spectral centroid
         (fraction of Nyquist), log10 spectral flatness, log10 kurtosis. Version 2 (the
         default) averages the sums behind them over the window's hop-long segments
         (spectra and moments of each hop, Welch style: a stream transforms each sample
         once); version 1 takes them over the whole window at once. Then, when
         Version 3 (the default) adds two slow features that see periodicity beyond one
         window (slugging: a pulse every few seconds): ``lf_max``, log10 of the largest
         lowest-band segment power over the last `SLOW_MEMORY_S` seconds of segments, and
         ``lf_swing``, that minus log10 of the smallest (`StreamingFeatures` keeps the
         segments; a lone window, `FeatureExtractor.transform`, has only its own). Then, when
         ``context_radius > 0``, each of those minus its median over the channels within
         ``context_radius`` (spatial context: a leak is local, a flow change is not).
``dts``  per channel: deviation of the window mean from a slow per-channel baseline (EMA of
         window means), second difference of the window mean along the fiber (the geothermal
         gradient is linear, so this is ~0 when normal), temporal slope within the window
         (per second), standard deviation within the window, and the deviation minus its
         local median (context).
``raw``  per channel: the window's samples standardised by a slow per-channel mean and
         standard deviation (EMAs); for generic slow time series (CSV, SCADA tags).
``mv``   multivariate process data (DTS zones, pressure, flow, valve or pump sensors): ONE
         row per window over all ``channels`` columns, the window's raw samples column by
         column (``c{j}_l{k}``: column j, k samples after the window's first), so one model
         sees the relations between sensors and over the last ``window_samples`` samples.
         Scaling is the model's (robust: median/IQR of the training rows). Usually
         ``hop_s`` is one sample: one row, one score per input row.
``dts`` and ``raw`` keep per-channel state; feed windows in time order.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import scipy.fft

_dasfeat: ModuleType | None
try:  # the das passes in C (built with the package); numpy's equivalent when it is missing
    import edge_agent._dasfeat as _dasfeat
except ImportError:  # pragma: no cover - a source tree without the built extension
    _dasfeat = None

PROFILES = ("das", "dts", "raw", "mv")
#: bounds that keep every derived size an int a window buffer can hold (hostile specs:
#: ``window_s = inf`` or ``1e300`` must be a `FeatureSpecError`, not an ``OverflowError``)
MAX_SAMPLE_RATE_HZ = 1e6
MAX_WINDOW_SAMPLES = 2**24
MAX_CONTEXT_RADIUS = 1024
VERSIONS = (1, 2, 3)
#: version 3's slow features look back this far (whole segments; a slug period is ~3 s)
SLOW_MEMORY_S = 4.0
DEFAULT_DAS_BANDS: tuple[tuple[float, float], ...] = (
    (1, 10), (10, 30), (30, 80), (80, 150), (150, 300), (300, 500), (500, 800), (800, 1000),
)
_EPS = 1e-12


class FeatureSpecError(ValueError):
    """A feature spec that cannot be computed."""


def _number(name: str, v: Any, *, integer: bool = False) -> float:
    ok = isinstance(v, int if integer else int | float) and not isinstance(v, bool)
    if not ok or not math.isfinite(v):
        raise FeatureSpecError(f"{name} must be a finite {'integer' if integer else 'number'}, "
                               f"got {v!r}")
    return float(v)


def _check_numbers(spec: FeatureSpec) -> None:
    """Types, finiteness and bounds of the numeric fields (before anything is derived)."""
    rate = _number("sample_rate_hz", spec.sample_rate_hz)
    window, hop = _number("window_s", spec.window_s), _number("hop_s", spec.hop_s)
    _number("context_radius", spec.context_radius, integer=True)
    _number("baseline_alpha", spec.baseline_alpha)
    if not (rate > 0 and window > 0 and hop > 0):
        raise FeatureSpecError("sample_rate_hz, window_s and hop_s must be > 0")
    if rate > MAX_SAMPLE_RATE_HZ:
        raise FeatureSpecError(f"sample_rate_hz must be <= {MAX_SAMPLE_RATE_HZ:g}, got {rate}")
    if window * rate > MAX_WINDOW_SAMPLES or hop * rate > MAX_WINDOW_SAMPLES:
        raise FeatureSpecError(f"window_s and hop_s must hold at most {MAX_WINDOW_SAMPLES} "
                               f"samples at {rate:g} Hz, got {window:g} s / {hop:g} s")
    if spec.context_radius > MAX_CONTEXT_RADIUS:
        raise FeatureSpecError(f"context_radius must be <= {MAX_CONTEXT_RADIUS}")
    bands = spec.bands_hz
    if not isinstance(bands, tuple | list) or not all(
            isinstance(b, tuple | list) and len(b) == 2 for b in bands):
        raise FeatureSpecError("bands_hz must be a list of (lo, hi) pairs")
    for b in bands:
        for v in b:
            _number("bands_hz", v)


@dataclass(frozen=True)
class FeatureSpec:
    profile: str = "das"
    sample_rate_hz: float = 2000.0
    window_s: float = 1.0
    hop_s: float = 0.5
    bands_hz: tuple[tuple[float, float], ...] = field(default=DEFAULT_DAS_BANDS)
    context_radius: int = 4
    baseline_alpha: float = 0.02
    version: int = 3
    channels: int = 0  # mv: the stream's column count (0 for the per-channel profiles)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise FeatureSpecError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        _check_numbers(self)
        if self.window_samples < (1 if self.profile == "mv" else 2):
            raise FeatureSpecError("a window must hold at least 2 samples (mv: 1)")
        if self.hop_samples < 1:
            raise FeatureSpecError("a hop must hold at least 1 sample")
        if self.context_radius < 0:
            raise FeatureSpecError("context_radius must be >= 0")
        if (self.profile == "mv") != (self.channels > 0):
            raise FeatureSpecError("channels must be > 0 for the mv profile and 0 otherwise")
        if self.profile == "mv" and self.channels * self.window_samples > 65536:
            raise FeatureSpecError("mv: channels x window samples must be <= 65536")
        if not (0 < self.baseline_alpha <= 1):
            raise FeatureSpecError("baseline_alpha must be in (0, 1]")
        if self.version not in VERSIONS:
            raise FeatureSpecError(f"version must be one of {VERSIONS}, got {self.version!r}")
        if self.version == 3 and self.profile != "das":  # das-only additions: the other
            object.__setattr__(self, "version", 2)  # profiles keep version 2 (and its hash)
        object.__setattr__(self, "bands_hz", tuple((float(a), float(b)) for a, b in self.bands_hz))
        if self.profile == "das":
            nyq = self.sample_rate_hz / 2
            if not self.bands_hz:
                raise FeatureSpecError("the das profile needs at least one band")
            for lo, hi in self.bands_hz:
                if not (0 <= lo < hi <= nyq):
                    raise FeatureSpecError(
                        f"band ({lo}, {hi}) Hz must satisfy 0 <= lo < hi <= {nyq}"
                    )
            if self.version >= 2 and self.window_samples % self.hop_samples:
                raise FeatureSpecError(
                    f"feature spec version 2 needs a window of whole hops: window_s "
                    f"{self.window_s:g} is not a multiple of hop_s {self.hop_s:g} (or use "
                    "feature_version 1)")
            freqs = np.fft.rfftfreq(self.segment_samples, 1.0 / self.sample_rate_hz)
            for lo, hi in self.bands_hz:
                if not np.any((freqs >= lo) & (freqs < hi)):
                    raise FeatureSpecError(
                        f"band ({lo:g}, {hi:g}) Hz holds no FFT bin of a "
                        f"{self.segment_samples}-sample segment (bins every "
                        f"{freqs[1]:g} Hz): widen it or lengthen the hop")

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate_hz)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_s * self.sample_rate_hz)

    @property
    def segment_samples(self) -> int:
        """Samples per spectral segment (das): a hop from version 2, the window before."""
        return self.hop_samples if self.version >= 2 else self.window_samples

    @property
    def segments(self) -> int:
        """Segments per window (das)."""
        return self.window_samples // self.segment_samples

    @property
    def memory_segments(self) -> int:
        """Segments behind version 3's slow features (at least a window's); 0 before."""
        if self.profile != "das" or self.version < 3:
            return 0
        return max(self.segments, round(SLOW_MEMORY_S / self.hop_s))

    @property
    def names(self) -> tuple[str, ...]:
        if self.profile == "das":
            base = [f"band_{lo:g}_{hi:g}" for lo, hi in self.bands_hz]
            base += ["log_rms", "centroid", "log_flatness", "log_kurtosis"]
            base += ["lf_max", "lf_swing"] if self.version >= 3 else []
            ctx = [f"ctx_{n}" for n in base] if self.context_radius > 0 else []
            return tuple(base + ctx)
        if self.profile == "dts":
            return ("baseline_dev", "grad2", "slope_per_s", "std", "ctx_baseline_dev")
        if self.profile == "mv":
            return tuple(f"c{j}_l{k}" for j in range(self.channels)
                         for k in range(self.window_samples))
        return tuple(f"x{i}" for i in range(self.window_samples))

    @property
    def dim(self) -> int:
        if self.profile == "mv":
            return self.channels * self.window_samples
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands_hz"] = [list(b) for b in self.bands_hz]
        if not self.channels:  # the per-channel profiles' dicts (and hashes) stay as they were
            del d["channels"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        d = dict(d)
        d["bands_hz"] = tuple(tuple(b) for b in d.get("bands_hz", ()))
        try:
            return cls(**d)
        except TypeError as exc:
            raise FeatureSpecError(str(exc)) from exc

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON: the identity a model package is built for."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def local_median(values: np.ndarray, radius: int) -> np.ndarray:
    """Median over channels within ``radius`` (axis 0 = channels), edges replicated."""
    if radius == 0:
        return values
    padded = np.pad(values, [(radius, radius)] + [(0, 0)] * (values.ndim - 1), mode="edge")
    finite = bool(np.isfinite(values).all())
    if finite and radius == 4:
        return _median9(padded, values.shape[0])
    view = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=0)
    if finite:  # an odd count: the median is the middle element
        return np.partition(view, radius, axis=-1)[..., radius]
    return np.median(view, axis=-1)  # NaN propagates as np.median does


#: Paeth's median-of-9 network: 19 compare-exchanges, the median ends in slot 4
_MEDIAN9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
            (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def _median9(padded: np.ndarray, n: int) -> np.ndarray:
    """Median over 9 consecutive rows of finite `padded` for each of its `n` windows: the
    same element `np.partition` selects, from whole-array min/max (about 3x faster)."""
    p = [padded[k:k + n].copy() for k in range(9)]
    for a, b in _MEDIAN9:
        lo = np.minimum(p[a], p[b])
        np.maximum(p[a], p[b], out=p[b])
        p[a] = lo
    return p[4]


#: implementations of the das profile's per-sample passes (`FeatureExtractor._das_block`)
KERNELS = ("c", "numpy")


def available_kernels() -> tuple[str, ...]:
    return KERNELS if _dasfeat is not None else ("numpy",)


def default_kernel() -> str:
    """The C kernel where the package was built with it (a gateway's install always is)."""
    return available_kernels()[0]


class FeatureExtractor:
    """Windows in, feature rows out: ``transform(window) -> (n_channels, spec.dim)`` float32.

    A window is float32 ``(spec.window_samples, n_channels)``, time-major like a frame.

    The das profile is built from *segments*: spec version 2 cuts a window into its hops
    (``window_samples / hop_samples`` segments, each Hann-tapered and transformed on its own,
    Welch style) and a window's row combines its segments' sums (`segment_sums`, `combine`).
    Consecutive windows share all but their last segment, so a stream transforms each
    sample once (`StreamingFeatures`). Version 1 is one segment per window (the spectrum of
    the whole window, every sample transformed ``window / hop`` times).

    ``threads``: channel blocks worked on in parallel (the rows do not depend on it). The das
    profile works through a window in blocks of ``block_channels`` channels with scratch
    buffers that stay in cache (an FFT along time over wide rows is memory-bound).
    """

    def __init__(self, spec: FeatureSpec, threads: int = 1, block_channels: int = 128,
                 kernel: str | None = None) -> None:
        if threads < 1 or block_channels < 2:
            raise ValueError("threads must be >= 1 and block_channels >= 2")
        if kernel not in (None, *KERNELS) or (kernel == "c" and _dasfeat is None):
            raise ValueError(f"kernel must be one of {available_kernels()}, got {kernel!r}")
        self.spec, self.threads, self.block_channels = spec, threads, block_channels
        self.kernel = kernel or default_kernel()
        n = self.segment_samples = spec.segment_samples
        self._taper = np.hanning(n).astype(np.float32)[:, None]
        self._taper_row = np.ascontiguousarray(self._taper[:, 0])
        freqs = np.fft.rfftfreq(n, 1.0 / spec.sample_rate_hz)
        self._freqs = freqs.astype(np.float32)
        # the bins with lo <= f < hi
        self._band_bins = [slice(*np.searchsorted(freqs, band).tolist()) for band in spec.bands_hz]
        self._band_edges = np.array([(b.start, b.stop) for b in self._band_bins],
                                    np.float32).ravel()
        for (lo, hi), bins in zip(spec.bands_hz, self._band_bins, strict=True):
            if bins.stop <= bins.start:
                raise FeatureSpecError(f"band ({lo}, {hi}) Hz holds no FFT bin at this window")
        self._t = (np.arange(spec.window_samples, dtype=np.float64) / spec.sample_rate_hz)
        self._t -= self._t.mean()
        self._mean: np.ndarray | None = None  # per-channel baseline (dts, raw)
        self._var: np.ndarray | None = None
        self._bufs = threading.local()  # das scratch buffers, one set per thread
        self._pool: ThreadPoolExecutor | None = None

    def reset(self) -> None:
        """Forget per-channel state (after a stream restart)."""
        self._mean = None
        self._var = None

    def close(self) -> None:
        """Stop the block threads (``threads > 1``); a later call starts them again."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def transform(self, window: np.ndarray) -> np.ndarray:
        if window.ndim != 2 or window.shape[0] != self.spec.window_samples:
            raise FeatureSpecError(
                f"window shape {window.shape}, expected ({self.spec.window_samples}, channels)"
            )
        if self.spec.profile == "das":
            n = self.segment_samples
            return self.combine([self.segment_sums(window[k:k + n])
                                 for k in range(0, window.shape[0], n)])
        if self.spec.profile == "dts":
            return self._dts(window)
        if self.spec.profile == "mv":
            return mv_row(window, self.spec.channels)
        return self._raw(window)

    @property
    def n_sums(self) -> int:
        """Columns of `segment_sums`: band powers, p2, p4, total power, first spectral
        moment, mean log power."""
        return len(self._band_bins) + 5

    def segment_sums(self, x: np.ndarray) -> np.ndarray:
        """One segment ``(segment_samples, n_channels)`` -> its sums ``(n_channels,
        n_sums)`` float32 (das)."""
        if x.ndim != 2 or x.shape[0] != self.segment_samples:
            raise FeatureSpecError(
                f"segment shape {x.shape}, expected ({self.segment_samples}, channels)")
        x = np.asarray(x, dtype=np.float32)
        if x.strides[1] != x.itemsize:
            x = np.ascontiguousarray(x)
        # sum-major while computing: each block writes whole contiguous rows (a strided
        # column per sum costs twice as much), transposed once at the end
        sums = np.empty((self.n_sums, x.shape[1]), dtype=np.float32)
        # numpy: the mean on full rows (a block of columns reads slowly); C: per block
        mean = x.mean(axis=0, keepdims=True) if self.kernel == "numpy" else None
        # blocks of block_channels to 2 * block_channels - 1 channels, never a single one (numpy
        # sums a single column in another order: the rows would move in the last digits)
        bounds = np.linspace(0, x.shape[1], max(1, x.shape[1] // self.block_channels) + 1)
        blocks = list(itertools.pairwise(bounds.round().astype(int).tolist()))
        if self.threads == 1 or len(blocks) == 1:
            for c0, c1 in blocks:
                self._das_block(x[:, c0:c1], _cols(mean, c0, c1), sums[:, c0:c1])
            return np.ascontiguousarray(sums.T)
        self._blocks_parallel(x, mean, sums, blocks)
        return np.ascontiguousarray(sums.T)

    def _blocks_parallel(self, x: np.ndarray, mean: np.ndarray | None, sums: np.ndarray,
                         blocks: list[tuple[int, int]]) -> None:
        """`_das_block` over `blocks` in ``threads`` shares: the calling thread works one
        share itself, ``threads - 1`` pool threads the others (one hand-off per share)."""
        def share(k: int) -> None:
            for c0, c1 in blocks[k::n]:
                self._das_block(x[:, c0:c1], _cols(mean, c0, c1), sums[:, c0:c1])

        n = min(self.threads, len(blocks))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="features")
        futures = [self._pool.submit(share, k) for k in range(1, n)]
        share(0)
        for f in futures:
            f.result()

    def combine(self, segments: list[np.ndarray],
                history: list[np.ndarray] | None = None) -> np.ndarray:
        """The window's rows from its segments' sums, oldest first (das). Version 3:
        ``history`` is the lowest band's power of the last segments up to this window's
        (oldest first, at most `FeatureSpec.memory_segments`); None = the window's own."""
        if len(segments) != self.spec.segments:
            raise FeatureSpecError(f"{len(segments)} segments, the spec has {self.spec.segments}")
        acc = segments[0].copy()
        for s in segments[1:]:
            acc += s
        if len(segments) > 1:
            acc /= np.float32(len(segments))
        nb, nbins = len(self._band_bins), self._freqs.size
        p2, p4, total, moment1, mean_log = acc[:, nb:].T
        slow = 2 if self.spec.version >= 3 else 0
        base = np.empty((acc.shape[0], nb + 4 + slow), dtype=np.float32)
        np.log10(acc[:, :nb] + _EPS, out=base[:, :nb])
        base[:, nb] = 0.5 * np.log10(p2 + _EPS)
        base[:, nb + 1] = moment1 / (total + _EPS) / (self.spec.sample_rate_hz / 2)
        flat = np.exp(mean_log) / (total / (nbins - 1) + _EPS)  # bin 0 is 0 in total
        base[:, nb + 2] = np.log10(flat + _EPS)
        base[:, nb + 3] = np.log10(p4 / (p2 * p2 + _EPS) + _EPS)
        if slow:
            self._slow(history if history else [s[:, 0] for s in segments], base[:, nb + 4:])
        return self._with_context(base)

    @staticmethod
    def _slow(history: list[np.ndarray], out: np.ndarray) -> None:
        """Version 3: ``lf_max`` and ``lf_swing`` of the lowest band's segment powers."""
        hi, lo = history[0].copy(), history[0].copy()
        for p in history[1:]:
            np.maximum(hi, p, out=hi)
            np.minimum(lo, p, out=lo)
        np.log10(hi + _EPS, out=out[:, 0])
        np.subtract(out[:, 0], np.log10(lo + _EPS), out=out[:, 1])

    def _scratch(self, n: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        buf = getattr(self._bufs, "buf", None)
        if buf is None or buf[0].shape[1] < w:
            buf = self._bufs.buf = (np.empty((n, w), np.float32), np.empty((n, w), np.float32),
                                    np.empty((self._freqs.size, w), np.float32))
        return buf[0][:, :w], buf[1][:, :w], buf[2][:, :w]

    def _das_block(self, x: np.ndarray, mean: np.ndarray | None, out: np.ndarray) -> None:
        """Sums of one block of channels (`x` time-major) into `out` (sum-major, one row per
        sum): band powers, p2 and p4 moments, total power, first spectral moment, mean log
        power. The C kernel: one pass makes a mean-free, tapered channel-major copy (the
        FFT along contiguous rows costs half the one along time-major columns) with p2 and
        p4; one pass over each spectrum gives the power sums and ``power + eps`` for the
        log, the one step left to numpy (its SIMD log)."""
        if mean is not None:  # the numpy kernel
            self._das_block_numpy(x, mean, out)
            return
        assert _dasfeat is not None
        (n, w), nbins, nb = x.shape, self._freqs.size, len(self._band_bins)
        xt, logp = self._scratch_c(n, w)
        _dasfeat.prep(x, self._taper_row, xt, out[nb], out[nb + 1])
        spec = scipy.fft.rfft(xt, axis=1, workers=1)
        red = np.empty((nb + 2, w), np.float32)
        _dasfeat.power(spec.view(np.float32), self._freqs, self._band_edges, red, logp, _EPS)
        out[:nb] = red[:nb]
        out[nb + 2:nb + 4] = red[nb:]
        np.log(logp, out=logp)
        np.divide(np.add.reduce(logp, axis=1), nbins - 1, out=out[nb + 4])

    def _scratch_c(self, n: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        buf = getattr(self._bufs, "buf_c", None)
        if buf is None or buf[0].shape[0] < w:
            buf = self._bufs.buf_c = (np.empty((w, n), np.float32),
                                      np.empty((w, self._freqs.size - 1), np.float32))
        return buf[0][:w], buf[1][:w]

    def _das_block_numpy(self, x: np.ndarray, mean: np.ndarray, out: np.ndarray) -> None:
        """`_das_block` in numpy alone (time-major; the same sums to float32 rounding)."""
        (n, w), nbins, nb = x.shape, self._freqs.size, len(self._band_bins)
        xd, sq, power = self._scratch(n, w)
        np.subtract(x, mean, out=xd)
        np.multiply(xd, xd, out=sq)
        np.divide(np.einsum("tc->c", sq), n, out=out[nb])
        np.divide(np.einsum("tc,tc->c", sq, sq), n, out=out[nb + 1])
        np.multiply(xd, self._taper, out=xd)
        spec = scipy.fft.rfft(xd, axis=0, workers=1)
        parts = spec.view(np.float32)  # re, im interleaved: square in place, add pairs
        np.multiply(parts, parts, out=parts)
        np.add(parts[:, 0::2], parts[:, 1::2], out=power)
        power[0] = 0.0
        for j, band in enumerate(self._band_bins):
            np.add.reduce(power[band], axis=0, out=out[j])
        np.add.reduce(power, axis=0, out=out[nb + 2])
        np.einsum("f,fc->c", self._freqs, power, out=out[nb + 3])
        logp = sq[1:nbins]
        np.log(np.add(power[1:], _EPS, out=logp), out=logp)
        np.divide(np.add.reduce(logp, axis=0), nbins - 1, out=out[nb + 4])

    def _with_context(self, base: np.ndarray) -> np.ndarray:
        if self.spec.context_radius == 0:
            return base.astype(np.float32)
        ctx = base - local_median(base, self.spec.context_radius)
        return np.concatenate([base, ctx], axis=1)

    def _update_baseline(self, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._mean is None or self._var is None or self._mean.shape != mean.shape:
            self._mean, self._var = mean.copy(), var.copy()
        base_mean, base_var = self._mean.copy(), self._var.copy()
        a = self.spec.baseline_alpha
        self._mean = (1 - a) * self._mean + a * mean
        self._var = (1 - a) * self._var + a * var
        return base_mean, base_var

    def _dts(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        base_mean, _ = self._update_baseline(mean, std * std)
        dev = mean - base_mean
        grad2 = np.zeros_like(mean)
        if mean.size >= 3:
            grad2[1:-1] = mean[1:-1] - 0.5 * (mean[:-2] + mean[2:])
        slope = (self._t[:, None] * (x - mean)).sum(axis=0) / max((self._t**2).sum(), _EPS)
        ctx = dev - local_median(dev, max(self.spec.context_radius, 1))
        return np.stack([dev, grad2, slope, std, ctx], axis=1).astype(np.float32)

    def _raw(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        base_mean, base_var = self._update_baseline(x.mean(axis=0), x.var(axis=0))
        scale = np.sqrt(np.maximum(base_var, 1e-12)) + 1e-6 * np.abs(base_mean) + 1e-9
        return ((x - base_mean) / scale).T.astype(np.float32)


def _cols(mean: np.ndarray | None, c0: int, c1: int) -> np.ndarray | None:
    return None if mean is None else mean[:, c0:c1]


def mv_row(window: np.ndarray, channels: int) -> np.ndarray:
    """The ``mv`` profile: a ``(window_samples, channels)`` window -> ``(1, dim)``, column by
    column (column j's samples are ``row[j * window_samples:(j + 1) * window_samples]``)."""
    if window.shape[1] != channels:
        raise FeatureSpecError(f"mv window has {window.shape[1]} columns, the spec {channels}")
    return np.ascontiguousarray(window.T, dtype=np.float32).reshape(1, -1)


def column_blocks(spec: FeatureSpec) -> np.ndarray:
    """``mv``: the column of each feature, ``(dim,)`` int (to sum contributions per column)."""
    return np.repeat(np.arange(spec.channels), spec.window_samples)
