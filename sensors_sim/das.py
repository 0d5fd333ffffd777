"""Normal DAS background, generated frame by frame, channel-major ``(channels, samples)``.

Components (all float32, background noise sigma about 1 in arbitrary strain-rate units):

* optical noise floor: white in time, averaged over the gauge length across channels;
* flow noise: 10-150 Hz band noise whose level follows a slowly varying flow rate and the
  geometry's flow profile (a well flows above its perforations, a pipeline everywhere);
* a low-frequency (0.5-10 Hz) common-mode strain, coherent over tens of metres;
* pump/compressor lines with harmonics over a limited channel extent;
* surface disturbances (vehicles, footsteps): band-limited transients lasting seconds, near
  the wellhead or anywhere along a pipeline, sometimes moving. Normal, but not stationary.

Speed: the optical floor's rows are random windows of a pool of gauge-averaged Gaussian
noise that is redrawn bit by bit (`sensors_sim.das_floor`); the coherent fields are
generated a second at a time on a coarse channel grid (every `COARSE` channels) and
interpolated with variance-preserving weights; filters carry state so frames join
seamlessly; buffers are allocated once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from sensors_sim.config import Pump, SimConfig
from sensors_sim.das_floor import OpticalFloor

COARSE = 16
FLOW_SIGMA = 1.2
LF_SIGMA = 0.6
CHUNK_S = 1.0
_UNIFORM = math.sqrt(12.0)  # sigma of (U(0,1) - 0.5) is 1/sqrt(12)


def default_pumps(cfg: SimConfig) -> tuple[Pump, ...]:
    """The geometry's pumps: an ESP above the perforations and a wellhead compressor for a
    well; a pump station at the inlet and a booster halfway for a pipeline."""
    c0, n = cfg.first_channel, cfg.channels
    if cfg.geometry == "well":
        return (Pump(c0 + int(n * 0.6), 58.3, extent=max(2, n // 40), level=2.0),
                Pump(c0 + min(5, n - 1), 24.7, extent=max(2, n // 60), level=1.2, harmonics=6))
    return (Pump(c0 + min(10, n - 1), 29.6, extent=max(2, n // 30), level=2.0),
            Pump(c0 + n // 2, 47.1, extent=max(2, n // 50), level=1.0, harmonics=3))


def flow_profile(cfg: SimConfig, positions: np.ndarray) -> np.ndarray:
    """Relative flow-noise level at channel offsets `positions` (0 = first channel)."""
    x = positions / max(cfg.channels - 1, 1)
    if cfg.geometry == "well":
        # perforations over 70-90 % of the depth: full flow above, ramp through, none below
        return np.clip((0.9 - x) / 0.2, 0.0, 1.0).astype(np.float32)
    return (0.9 + 0.1 * np.cos(2 * np.pi * 3 * x)).astype(np.float32)


def flow_rate(cfg: SimConfig, t: np.ndarray, phase: float) -> np.ndarray:
    """Flow rate over time (s): nominal with slow swings of about 15 %."""
    return (cfg.flow * (1.0 + 0.15 * np.sin(2 * np.pi * t / 600.0 + phase)
                        + 0.05 * np.sin(2 * np.pi * t / 97.0 + 2 * phase))).astype(np.float32)


@dataclass(slots=True)
class _Disturbance:
    start: float
    duration: float
    centre: float  # channel offset at start
    speed: float  # channels per second
    width: float
    amp: float
    zi: np.ndarray


class DasBackground:
    """Generates consecutive normal DAS frames for one fiber, time-major like the wire format.

    Parameters
    ----------
    cfg : SimConfig
        The fiber.
    seed : numpy.random.SeedSequence
        Entropy for this fiber's background; the same seed gives the same frames.
    """

    def __init__(self, cfg: SimConfig, seed: np.random.SeedSequence) -> None:
        self.cfg = cfg
        self.n = cfg.frame_samples
        self.rate = cfg.das_rate
        c, n = cfg.channels, self.n
        s_white, s_coarse, s_dist, s_misc = seed.spawn(4)
        self._rng_coarse = np.random.default_rng(s_coarse)
        self._rng_dist = np.random.default_rng(s_dist)
        misc = np.random.default_rng(s_misc)
        # optical floor: rows are random windows of a pool of gauge-averaged Gaussian noise
        gauge = min(max(1, round(cfg.gauge_m / cfg.spacing_m)), c)
        self._floor = OpticalFloor(c, n, gauge, np.random.default_rng(s_white))
        # coherent fields on a coarse grid, interpolated with variance-preserving weights
        self._step = step = COARSE if c >= 4 * COARSE else 1
        self._nblk = -(-c // step)
        frac = np.arange(step, dtype=np.float64) / step
        norm = np.sqrt((1 - frac) ** 2 + frac**2)
        self._w0 = ((1 - frac) / norm).astype(np.float32)
        self._w1 = (frac / norm).astype(np.float32)
        nc = self._nblk + 1
        self._profile = flow_profile(cfg, np.arange(nc) * float(step))[None, :]
        self._flow_phase = float(misc.uniform(0, 2 * np.pi))
        nyq = self.rate / 2
        self._sos_flow = signal.butter(2, [10 / nyq, min(150 / nyq, 0.9)], "bandpass",
                                       output="sos")
        self._sos_lf = signal.butter(2, [0.5 / nyq, 10 / nyq], "bandpass", output="sos")
        self._sos_dist = signal.butter(2, [3 / nyq, 60 / nyq], "bandpass", output="sos")
        # calibrate levels: sigma of unit-variance white noise after each filter
        self._k_flow = FLOW_SIGMA * _UNIFORM / _filtered_sigma(self._sos_flow)
        self._k_lf = LF_SIGMA * _UNIFORM / _filtered_sigma(self._sos_lf)
        self._k_dist = 1.0 / _filtered_sigma(self._sos_dist)
        self._zi_flow = np.zeros((self._sos_flow.shape[0], nc, 2))
        self._zi_lf = np.zeros((self._sos_lf.shape[0], nc, 2))
        # the coarse fields are made CHUNK_S at a time (filter calls cost ~50 us each)
        self._chunk_frames = max(1, round(CHUNK_S / cfg.frame_s))
        self._chunk_index = -1
        self._chunk = np.empty((0, nc), np.float32)
        self._interp = np.empty((n, self._nblk, step), np.float32)
        self._pair = np.empty((n, self._nblk, 2), np.float32)
        self._weights = np.stack([self._w0, self._w1])
        self._pumps = cfg.pumps if cfg.pumps is not None else default_pumps(cfg)
        self._pump_phase = misc.uniform(0, 2 * np.pi, size=(len(self._pumps), 16))
        self._dist: list[_Disturbance] = []
        self._next_dist = self._draw_gap()
        self._out = np.empty((n, c), np.float32)
        self.block_times = np.arange(n, dtype=np.float64) / self.rate

    def block(self, k: int) -> np.ndarray:
        """The normal background of DAS frame `k`, shape ``(frame_samples, channels)``.

        Frames must be requested in order 0, 1, 2, ... (filters carry state). The returned
        array is reused by the next call: copy it if you keep it.
        """
        n, c = self.n, self.cfg.channels
        t = k * n / self.rate + self.block_times
        out = self._out
        self._floor.fill(out)
        j, i = divmod(k, self._chunk_frames)
        if j != self._chunk_index:
            self._make_chunk(j)
        coarse = self._chunk[i * n: (i + 1) * n]
        pair = self._pair
        pair[..., 0] = coarse[:, :-1]
        pair[..., 1] = coarse[:, 1:]
        np.matmul(pair, self._weights, out=self._interp)  # linear interpolation
        out += self._interp.reshape(n, -1)[:, :c]
        self._add_pumps(out, t)
        self._add_disturbances(out, t)
        return out

    def _make_chunk(self, j: int) -> None:
        """Flow-band noise (scaled by flow rate and profile) plus low-frequency strain."""
        if j != self._chunk_index + 1:
            raise ValueError(f"DAS frames must be generated in order (chunk {j})")
        self._chunk_index = j
        if j > 0:
            self._floor.refresh()
        m = self._chunk_frames * self.n
        t = (j * m + np.arange(m)) / self.rate
        nc = self._nblk + 1
        noise = self._rng_coarse.random((2, nc, m), dtype=np.float32)
        noise -= np.float32(0.5)
        flow, self._zi_flow = signal.sosfilt(self._sos_flow, noise[0], zi=self._zi_flow)
        lf, self._zi_lf = signal.sosfilt(self._sos_lf, noise[1], zi=self._zi_lf)
        level = flow_rate(self.cfg, t, self._flow_phase) * np.float32(self._k_flow)
        chunk = (flow.T * level[:, None]).astype(np.float32)
        chunk *= self._profile
        chunk += lf.T.astype(np.float32) * np.float32(self._k_lf)
        self._chunk = chunk

    def _add_pumps(self, out: np.ndarray, t: np.ndarray) -> None:
        c0 = self.cfg.first_channel
        for i, p in enumerate(self._pumps):
            ph = self._pump_phase[i]
            drift = 0.003 * 45.0 / (2 * np.pi) * np.cos(2 * np.pi * t / 45.0 + ph[0])
            base = 2 * np.pi * p.f0 * (t - drift)
            tone = np.zeros(t.shape, np.float64)
            for h in range(1, p.harmonics + 1):
                tone += np.sin(h * base + ph[h % 16]) / h
            lo, hi = max(p.channel - p.extent, c0), min(p.channel + p.extent, self.cfg.last_channel)
            d = np.abs(np.arange(lo, hi + 1) - p.channel) / p.extent
            taper = (p.level * (1.0 - d)).astype(np.float32)
            out[:, lo - c0: hi - c0 + 1] += tone.astype(np.float32)[:, None] * taper[None, :]

    def _draw_gap(self) -> float:
        rate = self.cfg.surface_per_min / 60.0
        return float(self._rng_dist.exponential(1 / rate)) if rate > 0 else math.inf

    def _add_disturbances(self, out: np.ndarray, t: np.ndarray) -> None:
        rng, cfg = self._rng_dist, self.cfg
        while self._next_dist < t[-1]:
            well = cfg.geometry == "well"
            zone = min(40.0 / cfg.spacing_m, cfg.channels - 1.0) if well else cfg.channels - 1.0
            moving = not well and rng.random() < 0.5
            self._dist.append(_Disturbance(
                start=self._next_dist, duration=float(rng.uniform(2, 6)),
                centre=float(rng.uniform(0, zone)),
                speed=float(rng.uniform(-12, 12)) / cfg.spacing_m if moving else 0.0,
                width=float(rng.uniform(3, 8)), amp=float(rng.uniform(1.5, 4.0)),
                zi=np.zeros((self._sos_dist.shape[0], 2))))
            self._next_dist += self._draw_gap()
        keep = []
        for d in self._dist:
            u = (t - d.start) / d.duration
            if u[0] >= 1:
                continue
            keep.append(d)
            if u[-1] < 0:
                continue
            env = np.where((u >= 0) & (u < 1), 0.5 - 0.5 * np.cos(2 * np.pi * u), 0.0)
            carrier, d.zi = signal.sosfilt(self._sos_dist, rng.standard_normal(self.n), zi=d.zi)
            centre = d.centre + d.speed * (float(t[len(t) // 2]) - d.start)
            lo = max(0, int(centre - 3 * d.width))
            hi = min(cfg.channels, int(centre + 3 * d.width) + 1)
            if lo >= hi:
                continue
            space = np.exp(-0.5 * ((np.arange(lo, hi) - centre) / d.width) ** 2) * d.amp
            wave = (env * carrier * self._k_dist).astype(np.float32)
            out[:, lo:hi] += wave[:, None] * space.astype(np.float32)[None, :]
        self._dist = keep


def _filtered_sigma(sos: np.ndarray) -> float:
    """Standard deviation of unit white noise after `sos` (from the impulse response)."""
    impulse = np.zeros(1 << 16)
    impulse[0] = 1.0
    return float(np.sqrt(np.sum(signal.sosfilt(sos, impulse) ** 2)))
