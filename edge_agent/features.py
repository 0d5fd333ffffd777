"""The feature spec and the feature extractor: a public contract.

A `FeatureSpec` fully defines the feature row of one channel in one window; its `hash` is
stored in every model package, and a gateway refuses a model built for another spec.
The same `FeatureExtractor` runs on the gateway, in offline scoring and in training, so the
three see identical numbers for identical windows.

Profiles
--------
``das``  per channel over a window of ``n_samples x n_channels``: log10 band energies of the
         Hann-windowed spectrum for each band in ``bands_hz``, log10 RMS, spectral centroid
         (fraction of Nyquist), log10 spectral flatness, log10 kurtosis; then, when
         ``context_radius > 0``, each of those minus its median over the channels within
         ``context_radius`` (spatial context: a leak is local, a flow change is not).
``dts``  per channel: deviation of the window mean from a slow per-channel baseline (EMA of
         window means), second difference of the window mean along the fiber (the geothermal
         gradient is linear, so this is ~0 when normal), temporal slope within the window
         (per second), standard deviation within the window, and the deviation minus its
         local median (context).
``raw``  per channel: the window's samples standardised by a slow per-channel mean and
         standard deviation (EMAs); for generic slow time series (CSV, SCADA tags).
``dts`` and ``raw`` keep per-channel state; feed windows in time order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.fft

PROFILES = ("das", "dts", "raw")
DEFAULT_DAS_BANDS: tuple[tuple[float, float], ...] = (
    (1, 10), (10, 30), (30, 80), (80, 150), (150, 300), (300, 500), (500, 800), (800, 1000),
)
_EPS = 1e-12


class FeatureSpecError(ValueError):
    """A feature spec that cannot be computed."""


@dataclass(frozen=True)
class FeatureSpec:
    profile: str = "das"
    sample_rate_hz: float = 2000.0
    window_s: float = 1.0
    hop_s: float = 0.5
    bands_hz: tuple[tuple[float, float], ...] = field(default=DEFAULT_DAS_BANDS)
    context_radius: int = 4
    baseline_alpha: float = 0.02
    version: int = 1

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise FeatureSpecError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        if not (self.sample_rate_hz > 0 and self.window_s > 0 and self.hop_s > 0):
            raise FeatureSpecError("sample_rate_hz, window_s and hop_s must be > 0")
        if self.window_samples < 2:
            raise FeatureSpecError("a window must hold at least 2 samples")
        if self.hop_samples < 1:
            raise FeatureSpecError("a hop must hold at least 1 sample")
        if self.context_radius < 0:
            raise FeatureSpecError("context_radius must be >= 0")
        if not (0 < self.baseline_alpha <= 1):
            raise FeatureSpecError("baseline_alpha must be in (0, 1]")
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

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate_hz)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_s * self.sample_rate_hz)

    @property
    def names(self) -> tuple[str, ...]:
        if self.profile == "das":
            base = [f"band_{lo:g}_{hi:g}" for lo, hi in self.bands_hz]
            base += ["log_rms", "centroid", "log_flatness", "log_kurtosis"]
            ctx = [f"ctx_{n}" for n in base] if self.context_radius > 0 else []
            return tuple(base + ctx)
        if self.profile == "dts":
            return ("baseline_dev", "grad2", "slope_per_s", "std", "ctx_baseline_dev")
        return tuple(f"x{i}" for i in range(self.window_samples))

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands_hz"] = [list(b) for b in self.bands_hz]
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
    view = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=0)
    return np.median(view, axis=-1)


class FeatureExtractor:
    """Windows in, feature rows out: ``transform(window) -> (n_channels, spec.dim)`` float32.

    A window is float32 ``(spec.window_samples, n_channels)``, time-major like a frame.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        n = spec.window_samples
        self._taper = np.hanning(n).astype(np.float32)[:, None]
        freqs = np.fft.rfftfreq(n, 1.0 / spec.sample_rate_hz)
        self._freqs = freqs.astype(np.float32)[:, None]
        self._band_bins = [(freqs >= lo) & (freqs < hi) for lo, hi in spec.bands_hz]
        for (lo, hi), mask in zip(spec.bands_hz, self._band_bins, strict=True):
            if not mask.any():
                raise FeatureSpecError(f"band ({lo}, {hi}) Hz holds no FFT bin at this window")
        self._t = (np.arange(n, dtype=np.float64) / spec.sample_rate_hz)
        self._t -= self._t.mean()
        self._mean: np.ndarray | None = None  # per-channel baseline (dts, raw)
        self._var: np.ndarray | None = None

    def reset(self) -> None:
        """Forget per-channel state (after a stream restart)."""
        self._mean = None
        self._var = None

    def transform(self, window: np.ndarray) -> np.ndarray:
        if window.ndim != 2 or window.shape[0] != self.spec.window_samples:
            raise FeatureSpecError(
                f"window shape {window.shape}, expected ({self.spec.window_samples}, channels)"
            )
        if self.spec.profile == "das":
            return self._das(window)
        if self.spec.profile == "dts":
            return self._dts(window)
        return self._raw(window)

    def _das(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        xd = x - x.mean(axis=0, keepdims=True)
        p2 = np.mean(xd * xd, axis=0)
        p4 = np.mean((xd * xd) ** 2, axis=0)
        spec = scipy.fft.rfft(xd * self._taper, axis=0)
        power = (spec.real * spec.real + spec.imag * spec.imag).astype(np.float32)
        power[0] = 0.0
        total = power.sum(axis=0) + _EPS
        cols = [np.log10(power[m].sum(axis=0) + _EPS) for m in self._band_bins]
        cols.append(0.5 * np.log10(p2 + _EPS))
        cols.append((self._freqs * power).sum(axis=0) / total / (self.spec.sample_rate_hz / 2))
        logp = np.log(power[1:] + _EPS)
        flat = np.exp(logp.mean(axis=0)) / (power[1:].mean(axis=0) + _EPS)
        cols.append(np.log10(flat + _EPS))
        cols.append(np.log10(p4 / (p2 * p2 + _EPS) + _EPS))
        base = np.stack(cols, axis=1)
        return self._with_context(base)

    def _with_context(self, base: np.ndarray) -> np.ndarray:
        if self.spec.context_radius == 0:
            return base.astype(np.float32)
        ctx = base - local_median(base, self.spec.context_radius)
        return np.concatenate([base, ctx], axis=1).astype(np.float32)

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
