"""Run configuration: one fiber (`SimConfig`), its pumps (`Pump`) and anomalies (`Scenario`).

Everything is a frozen dataclass validated on construction; bad values raise `ConfigError`
(a `ValueError`) naming the field. Times are seconds from the start of the run, channels are
absolute fiber channel indices (``first_channel .. first_channel + channels - 1``) and channel
ranges are inclusive at both ends, as in `edge_agent.events`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from edge_agent import topics

#: 2024-01-01T00:00:00Z: the default first-sample time, so that runs are reproducible.
DEFAULT_START_NS = 1_704_067_200_000_000_000
GEOMETRIES = ("well", "pipeline")
DTYPES = ("int16", "float32")
STREAMS = ("das", "dts")

#: Anomaly kinds: what they inject, which streams by default, and the extra parameters each
#: accepts (with defaults). Intensity 1.0 means "clearly detectable": roughly +10 dB in the
#: kind's characteristic band at its centre channel (or full effect for faults).
KINDS: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "leak": (("das", "dts"), {"spread": 4.0, "cooling": 2.0, "tau": 2.0}),
    "sand": (("das",), {"rate": 60.0}),
    "slug": (("das",), {"period": 3.0, "speed": 10.0, "duty": 0.35}),
    "valve": (("das",), {"period": 20.0, "on": 2.0}),
    "dead": (("das",), {}),
    "stuck": (("das",), {}),
    "spikes": (("das",), {"rate": 2.0}),
    "fiber_break": (("das", "dts"), {}),
    "dropped": (("das",), {}),
}


#: Kinds that are not anomalies: recurring plant operation an operator labels a false alarm
#: (``valve``: an actuator stroking every ``period`` s for ``on`` s). Random schedules leave
#: them out.
BENIGN = ("valve",)


class ConfigError(ValueError):
    """An invalid simulator configuration or scenario; the message names the field."""


def require(ok: bool, message: str) -> None:
    """Raise `ConfigError(message)` unless `ok`."""
    if not ok:
        raise ConfigError(message)


#: upper bounds of `SimConfig`'s numbers: a schedule file may hold ``inf`` or ``1e300``
_NUMBER_MAX = {"spacing_m": 1000.0, "das_rate": 1e6, "frame_s": 60.0,
               "dts_interval_s": 3600.0, "seconds": 10 * 365 * 86400.0, "das_scale": 1e6,
               "gauge_m": 1000.0, "flow": 1000.0, "surface_per_min": 1e4}
_INT_RANGE = {"channels": (0, 2**32), "first_channel": (0, 2**32),
              "start_ns": (-(2**62), 2**62)}


def _check_numbers(cfg: object) -> None:
    """Every number finite, of its type and within `_NUMBER_MAX` / `_INT_RANGE`, before any
    derived size (frames, samples) is computed from it."""
    for name, top in _NUMBER_MAX.items():
        v = getattr(cfg, name)
        if v is None and name == "seconds":
            continue
        require(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                and abs(v) <= top, f"{name} must be a finite number up to {top:g}, got {v!r}")
    for name, (lo, hi) in _INT_RANGE.items():
        v = getattr(cfg, name)
        require(isinstance(v, int) and not isinstance(v, bool) and lo <= v < hi,
                f"{name} must be an integer in {lo}..{hi - 1}, got {v!r}")


@dataclass(frozen=True, slots=True)
class Pump:
    """A pump or compressor: a tonal line at `f0` Hz plus harmonics near `channel`.

    Parameters
    ----------
    channel : int
        Absolute channel of the source.
    f0 : float
        Fundamental frequency, Hz (drifts by about 0.3 %).
    extent : int
        Half-width in channels over which the tone is heard (linear taper to zero).
    level : float
        Amplitude of the fundamental relative to the background noise (sigma 1).
    harmonics : int
        Number of lines including the fundamental; harmonic ``h`` has amplitude ``level / h``.
    """

    channel: int
    f0: float
    extent: int = 20
    level: float = 1.5
    harmonics: int = 4

    def __post_init__(self) -> None:
        require(self.f0 > 0 and math.isfinite(self.f0), f"pump f0 must be > 0, got {self.f0}")
        require(self.extent >= 1, f"pump extent must be >= 1, got {self.extent}")
        require(self.harmonics >= 1, f"pump harmonics must be >= 1, got {self.harmonics}")
        require(self.level >= 0, f"pump level must be >= 0, got {self.level}")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One labelled anomaly.

    Parameters
    ----------
    kind : str
        One of `KINDS`.
    onset, duration : float
        Seconds from the start of the run; the anomaly is active on ``[onset, onset+duration)``.
    channel : int, optional
        Centre channel (leak, and the break point of ``fiber_break``).
    ch_start, ch_end : int, optional
        Inclusive channel range (sand, slug, dead, stuck, spikes). A centre alone means
        ``channel - 5 .. channel + 5``; nothing means the whole fiber.
    intensity : float
        Scale of the effect; for ``dropped`` the probability that a frame is lost.
    streams : tuple of str, optional
        Streams affected; default per kind (see `KINDS`).
    params : mapping
        Kind-specific extras, e.g. ``spread`` for leak, ``period`` for slug.
    """

    kind: str
    onset: float
    duration: float
    channel: int | None = None
    ch_start: int | None = None
    ch_end: int | None = None
    intensity: float = 1.0
    streams: tuple[str, ...] | None = None
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.kind in KINDS, f"unknown anomaly kind {self.kind!r}; choose from "
               + ", ".join(KINDS))
        require(math.isfinite(self.onset) and self.onset >= 0, f"onset must be >= 0: {self.onset}")
        require(math.isfinite(self.duration) and self.duration > 0,
               f"duration must be > 0: {self.duration}")
        require(math.isfinite(self.intensity) and self.intensity > 0,
               f"intensity must be > 0: {self.intensity}")
        if self.streams is not None:
            require(len(self.streams) > 0 and all(s in STREAMS for s in self.streams),
                   f"streams must be a subset of {STREAMS}: {self.streams}")
        allowed = KINDS[self.kind][1]
        for key, value in self.params.items():
            require(key in allowed, f"{self.kind} has no parameter {key!r}"
                   + (f" (accepts {', '.join(allowed)})" if allowed else ""))
            require(math.isfinite(value) and value > 0, f"{self.kind} {key} must be > 0: {value}")
        if self.ch_start is not None or self.ch_end is not None:
            require(self.ch_start is not None and self.ch_end is not None
                   and 0 <= self.ch_start <= self.ch_end,
                   f"channel range {self.ch_start}-{self.ch_end} is not a valid range")

    @property
    def affected_streams(self) -> tuple[str, ...]:
        """The streams this anomaly touches (explicit or the kind's default)."""
        return self.streams if self.streams is not None else KINDS[self.kind][0]

    def param(self, name: str) -> float:
        """A kind-specific parameter, or its default."""
        return float(self.params.get(name, KINDS[self.kind][1][name]))


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One interrogator on one fiber: geometry, sampling, framing, background and anomalies.

    Parameters
    ----------
    site, gateway : str
        Topic levels (`edge_agent.topics.check_name`).
    geometry : {"well", "pipeline"}
        Shapes the flow profile, pumps, surface-disturbance zone and DTS profile.
    channels, first_channel, spacing_m : int, int, float
        Fiber layout; channel ``i`` is at ``i * spacing_m`` metres (depth, for a well).
    das_rate, frame_s : float
        DAS sample rate (Hz) and frame length (s); ``das_rate * frame_s`` must be whole.
    dts_interval_s : float
        One DTS trace every this many seconds.
    seconds : float or None
        Run length; None runs until stopped (scenarios still need finite durations).
    start_ns : int
        Time of the first sample (ns since the epoch); part of the frames' bytes.
    das_dtype, das_scale : str, float
        Wire dtype of DAS frames and the int16 scale (physical = raw * scale).
    streams : tuple of str
        Which streams to emit.
    gauge_m : float
        Gauge length: the background noise is averaged over this many metres.
    flow : float
        Nominal flow rate, relative (1.0 = typical); flow noise scales with it.
    surface_per_min : float
        Mean number of surface disturbances (normal transients) per minute.
    pumps : tuple of Pump or None
        Tonal sources; None means the geometry's defaults.
    scenarios : tuple of Scenario
        Labelled anomalies.
    """

    site: str = "well-a"
    gateway: str = "gw1"
    geometry: str = "well"
    channels: int = 1024
    first_channel: int = 0
    spacing_m: float = 1.0
    das_rate: float = 2000.0
    frame_s: float = 0.05
    dts_interval_s: float = 1.0
    seconds: float | None = 30.0
    start_ns: int = DEFAULT_START_NS
    das_dtype: str = "int16"
    das_scale: float = 1.0 / 256.0
    streams: tuple[str, ...] = STREAMS
    gauge_m: float = 10.0
    flow: float = 1.0
    surface_per_min: float = 2.0
    pumps: tuple[Pump, ...] | None = None
    scenarios: tuple[Scenario, ...] = ()

    def __post_init__(self) -> None:
        _check_numbers(self)
        try:
            topics.check_name(self.site, "site")
            topics.check_name(self.gateway, "gateway")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        require(self.geometry in GEOMETRIES, f"geometry must be one of {GEOMETRIES}")
        require(4 <= self.channels <= 65_536, f"channels must be 4..65536, got {self.channels}")
        require(0 <= self.first_channel and self.first_channel + self.channels <= 2**32,
               f"first_channel out of range: {self.first_channel}")
        require(self.spacing_m > 0, f"spacing_m must be > 0, got {self.spacing_m}")
        require(1000 <= self.das_rate <= 100_000,
                f"das_rate must be 1000..100000 Hz: {self.das_rate}")
        n = self.das_rate * self.frame_s
        require(self.frame_s > 0 and abs(n - round(n)) < 1e-6 and round(n) >= 8,
               f"das_rate * frame_s must be a whole number >= 8, got {n}")
        require(self.dts_interval_s >= 0.1, f"dts_interval_s must be >= 0.1: {self.dts_interval_s}")
        require(self.seconds is None or self.seconds > 0, f"seconds must be > 0: {self.seconds}")
        require(self.das_dtype in DTYPES, f"das_dtype must be one of {DTYPES}")
        require(self.das_scale > 0, f"das_scale must be > 0, got {self.das_scale}")
        require(len(self.streams) > 0 and set(self.streams) <= set(STREAMS),
               f"streams must be a non-empty subset of {STREAMS}: {self.streams}")
        require(self.gauge_m >= 0 and self.flow >= 0 and self.surface_per_min >= 0,
               "gauge_m, flow and surface_per_min must be >= 0")
        last = self.first_channel + self.channels - 1
        for p in self.pumps or ():
            require(self.first_channel <= p.channel <= last, f"pump channel {p.channel} off fiber")
            require(p.f0 * p.harmonics < self.das_rate / 2, f"pump {p.f0} Hz harmonics > Nyquist")
        for s in self.scenarios:
            for ch in (s.channel, s.ch_start, s.ch_end):
                require(ch is None or self.first_channel <= ch <= last,
                       f"{s.kind} channel {ch} is off the fiber ({self.first_channel}..{last})")
            if self.seconds is not None:
                require(s.onset < self.seconds,
                       f"{s.kind} onset {s.onset} s is after the end of the run")

    @property
    def frame_samples(self) -> int:
        """DAS samples per frame."""
        return round(self.das_rate * self.frame_s)

    @property
    def last_channel(self) -> int:
        return self.first_channel + self.channels - 1
