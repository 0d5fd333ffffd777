"""Process anomalies added on top of the background: leak, sand ingress, slugging.

Every effect works in place on a time-major DAS block ``(samples, channels)`` and/or a DTS
trace ``(channels,)``, with local channel indices (absolute channel - ``first_channel``). It
draws its randomness from its own generator, so adding one scenario never changes the
background or another scenario. Intensity 1.0 is about +10 dB in the kind's band at its
centre; see each class for the signature the edge features see.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from sensors_sim.config import Scenario, SimConfig


def unit_gain(sos: np.ndarray) -> float:
    """1 / sigma of unit white noise after `sos`, from the impulse response."""
    impulse = np.zeros(1 << 15)
    impulse[0] = 1.0
    return 1.0 / float(np.sqrt(np.sum(signal.sosfilt(sos, impulse) ** 2)))


class Effect:
    """One scenario's injection; subclasses override `das` and/or `dts`.

    Attributes
    ----------
    ch_start, ch_end : int
        The labelled (inclusive, absolute) channel range.
    t_on, t_off : float
        Active interval, seconds from the start of the run.
    """

    def __init__(self, sc: Scenario, cfg: SimConfig, rng: np.random.Generator) -> None:
        self.sc, self.cfg, self.rng = sc, cfg, rng
        self.t_on, self.t_off = sc.onset, sc.onset + sc.duration
        self.ch_start, self.ch_end = self._label_range()
        self.streams = tuple(s for s in sc.affected_streams if s in cfg.streams)

    def _label_range(self) -> tuple[int, int]:
        sc, cfg = self.sc, self.cfg
        if sc.ch_start is not None and sc.ch_end is not None:
            return sc.ch_start, min(sc.ch_end, cfg.last_channel)
        if sc.channel is not None:
            return max(sc.channel - 5, cfg.first_channel), min(sc.channel + 5, cfg.last_channel)
        return cfg.first_channel, cfg.last_channel

    @property
    def local(self) -> slice:
        """Local channel slice of the labelled range."""
        c0 = self.cfg.first_channel
        return slice(self.ch_start - c0, self.ch_end - c0 + 1)

    def gate(self, t: np.ndarray) -> np.ndarray:
        """1.0 where `t` (s) is inside the active interval, else 0.0."""
        return ((t >= self.t_on) & (t < self.t_off)).astype(np.float32)

    def active(self, t0: float, t1: float) -> bool:
        """Whether ``[t0, t1]`` overlaps the active interval."""
        return t1 >= self.t_on and t0 < self.t_off

    def das(self, block: np.ndarray, t: np.ndarray) -> None:
        """Modify DAS `block` (samples, channels) whose sample times (s) are `t`."""

    def dts(self, trace: np.ndarray, t: float) -> None:
        """Modify DTS `trace` (channels,) taken at time `t` (s)."""


class Leak(Effect):
    """Broadband hiss (80-950 Hz) centred on `channel`, decaying as ``exp(-|d| / spread)``,
    plus Joule-Thomson cooling on DTS (``cooling`` deg C at intensity 1, Gaussian of width
    ``spread``, time constant ``tau``; it recovers with the same constant after the end).
    The labelled range is where the hiss is at least as strong as the background (+3 dB in
    300-800 Hz); it is rendered, ever weaker, out to three times `spread`."""

    def __init__(self, sc: Scenario, cfg: SimConfig, rng: np.random.Generator) -> None:
        super().__init__(sc, cfg, rng)
        nyq = cfg.das_rate / 2
        self._sos = signal.butter(3, [80 / nyq, min(950 / nyq, 0.95)], "bandpass", output="sos")
        k = 3.0 * sc.intensity * unit_gain(self._sos)
        c0, spread = cfg.first_channel, sc.param("spread")
        reach = math.ceil(3 * spread)
        self._lo = max(self.centre - reach, c0) - c0
        self._hi = min(self.centre + reach, cfg.last_channel) - c0 + 1
        d = np.abs(np.arange(self._lo, self._hi) + c0 - self.centre)
        self._amp = (k * np.exp(-d / spread)).astype(np.float32)
        self._zi = np.zeros((self._sos.shape[0], self._hi - self._lo, 2))
        dts_d = (np.arange(cfg.channels) + c0 - self.centre) / spread
        self._cool = -sc.param("cooling") * sc.intensity * np.exp(-0.5 * dts_d**2)

    @property
    def centre(self) -> int:
        sc = self.sc
        if sc.channel is not None:
            return sc.channel
        if sc.ch_start is not None and sc.ch_end is not None:
            return (sc.ch_start + sc.ch_end) // 2
        return (self.cfg.first_channel + self.cfg.last_channel) // 2

    def _label_range(self) -> tuple[int, int]:
        # where the hiss is at least as strong as the background in 300-800 Hz:
        # (3 I)^2 exp(-2 d / spread) * 0.23 >= 0.2  <=>  d <= spread / 2 * ln(10 I^2)
        reach = self.sc.param("spread") / 2 * math.log(max(10.0 * self.sc.intensity**2, 1.0))
        half = int(reach)
        return (max(self.centre - half, self.cfg.first_channel),
                min(self.centre + half, self.cfg.last_channel))

    def das(self, block: np.ndarray, t: np.ndarray) -> None:
        if not self.active(t[0], t[-1]):
            return
        noise = self.rng.standard_normal((self._hi - self._lo, len(t)))
        y, self._zi = signal.sosfilt(self._sos, noise, zi=self._zi)
        env = np.clip((t - self.t_on) / 0.1, 0.0, 1.0) * (t < self.t_off)
        block[:, self._lo: self._hi] += (y.T * env[:, None]).astype(np.float32) * self._amp

    def dts(self, trace: np.ndarray, t: float) -> None:
        tau = self.sc.param("tau")
        if t < self.t_on or t >= self.t_off + 8 * tau:
            return
        depth = 1.0 - math.exp(-(min(t, self.t_off) - self.t_on) / tau)
        if t >= self.t_off:
            depth *= math.exp(-(t - self.t_off) / tau)
        trace += (self._cool * depth).astype(np.float32)


class Sand(Effect):
    """Sand ingress: impulsive 450-900 Hz ringing (3 ms decay) at random channels of the
    perforation zone, ``rate * intensity`` impacts per second over the zone, amplitude about
    30 x the background at intensity 1, spreading +-2 channels within the zone. High
    kurtosis and high-frequency energy."""

    _RING = 0.003

    def __init__(self, sc: Scenario, cfg: SimConfig, rng: np.random.Generator) -> None:
        super().__init__(sc, cfg, rng)
        self._len = math.ceil(6 * self._RING * cfg.das_rate)
        self._spill = np.zeros((self._len, cfg.channels), np.float32)
        self._spill_active = False

    def das(self, block: np.ndarray, t: np.ndarray) -> None:
        n, rate, rng = len(t), self.cfg.das_rate, self.rng
        if self._spill_active:  # ringing carried over from the previous frame
            m = min(self._len, n)
            block[:m] += self._spill[:m]
            self._spill[: self._len - m] = self._spill[m:].copy()
            self._spill[self._len - m:] = 0.0
            self._spill_active = m < self._len
        if not self.active(t[0], t[-1]):
            return
        count = rng.poisson(self.sc.param("rate") * self.sc.intensity * n / rate)
        if count == 0:
            return
        lo, hi = self.local.start, self.local.stop
        a, b = lo, hi  # impacts ring on +-2 channels, but never outside the zone
        buf = np.zeros((n + self._len, b - a), np.float32)
        tt = np.arange(self._len) / rate
        for _ in range(count):
            i = int(rng.integers(0, n))
            if not self.t_on <= t[i] < self.t_off:
                continue
            f = rng.uniform(450.0, min(900.0, 0.45 * rate))
            amp = 30.0 * self.sc.intensity * rng.uniform(0.6, 1.4) * rng.choice([-1.0, 1.0])
            wave = amp * np.exp(-tt / self._RING) * np.sin(2 * np.pi * f * tt + rng.uniform(0, 6.3))
            ch = int(rng.integers(lo, hi))
            for d in range(-2, 3):
                if a <= ch + d < b:
                    buf[i: i + self._len, ch + d - a] += wave * math.exp(-abs(d))
        block[:, a:b] += buf[:n]
        self._spill[:, a:b] += buf[n:]
        self._spill_active = True


class Slug(Effect):
    """Slugging: low-frequency (1-20 Hz) energy in pulses every ``period`` s (``duty`` of the
    period), travelling along the range at ``speed`` m/s; about 4 x the background at
    intensity 1. Periodic 1-10 Hz band energy over a long stretch of channels."""

    _STEP = 8

    def __init__(self, sc: Scenario, cfg: SimConfig, rng: np.random.Generator) -> None:
        super().__init__(sc, cfg, rng)
        nyq = cfg.das_rate / 2
        self._sos = signal.butter(2, [1 / nyq, 20 / nyq], "bandpass", output="sos")
        self._k = 4.0 * sc.intensity * unit_gain(self._sos)
        width = self.ch_end - self.ch_start + 1
        self._n_car = -(-width // self._STEP)
        self._zi = np.zeros((self._sos.shape[0], self._n_car, 2))
        self._delay = (np.arange(width) * cfg.spacing_m / sc.param("speed"))[None, :]

    def das(self, block: np.ndarray, t: np.ndarray) -> None:
        if not self.active(t[0], t[-1]):
            return
        period, duty = self.sc.param("period"), self.sc.param("duty")
        noise = self.rng.standard_normal((self._n_car, len(t)))
        car, self._zi = signal.sosfilt(self._sos, noise, zi=self._zi)
        width = self.ch_end - self.ch_start + 1
        carrier = np.repeat(car.T, self._STEP, axis=1)[:, :width]
        phase = np.mod((t[:, None] - self.t_on - self._delay) / period, 1.0)
        pulse = np.exp(-0.5 * ((phase - 0.5) / (duty / 4)) ** 2) * self.gate(t)[:, None]
        block[:, self.local] += (self._k * carrier * pulse).astype(np.float32)


class Valve(Effect):
    """A benign, recurring transient: a valve actuator stroking for ``on`` s every ``period``
    s (from the onset, for the scenario's duration). Its motor sings a tone sweeping
    150 -> 400 Hz over the stroke, about 3 x the background at intensity 1, tapered over the
    channel range. Not an anomaly (`sensors_sim.config.BENIGN`): the recurring false alarm
    an operator labels, which a model should learn as normal."""

    def __init__(self, sc: Scenario, cfg: SimConfig, rng: np.random.Generator) -> None:
        super().__init__(sc, cfg, rng)
        width = self.ch_end - self.ch_start + 1
        d = np.abs(np.arange(width) - (width - 1) / 2) / max(1.0, width / 2)
        self._taper = (3.0 * sc.intensity * (1.0 - 0.5 * d)).astype(np.float32)

    def strokes(self) -> list[tuple[float, float]]:
        """(start, end) seconds of every stroke."""
        period, on = self.sc.param("period"), self.sc.param("on")
        n = max(0, math.ceil((self.t_off - self.t_on) / period))
        return [(self.t_on + k * period, min(self.t_on + k * period + on, self.t_off))
                for k in range(n)]

    def das(self, block: np.ndarray, t: np.ndarray) -> None:
        if not self.active(t[0], t[-1]):
            return
        period, on = self.sc.param("period"), self.sc.param("on")
        ph = np.mod(t - self.t_on, period)
        gate = (ph < on) & (t >= self.t_on) & (t < self.t_off)
        if not gate.any():
            return
        x = ph / on
        phase = 2 * np.pi * on * (150.0 * x + 125.0 * x * x)  # f = 150 + 250 x Hz
        env = np.minimum(1.0, np.minimum(ph, on - ph) / 0.05) * gate
        wave = (np.sin(phase) * env).astype(np.float32)
        block[:, self.local] += wave[:, None] * self._taper[None, :]
