"""Sensor and interrogator faults, applied after the process signals.

* ``dead``: the channels read exactly 0 (DAS and/or DTS);
* ``stuck``: the channels hold the value they had at onset;
* ``spikes``: isolated single-sample spikes, ``rate`` per channel per second, about 40 x the
  background at intensity 1 (DTS: +-5 deg C);
* ``fiber_break``: every channel from the break point to the end of the fiber reads noise
  (DAS: uniform random phase-like noise, sigma 10 x the noise floor; DTS: readings scattered
  by ~8 deg C around the last good value);
* ``dropped``: whole frames are not emitted; their sequence numbers are skipped, so the
  receiver sees gaps. Each frame starting in the interval is lost with probability
  ``min(intensity, 1)``; the lost numbers are in the label.
"""

from __future__ import annotations

import math

import numpy as np

from sensors_sim.anomalies import Effect
from sensors_sim.config import Scenario, SimConfig


class Dead(Effect):
    """Channels read exactly zero."""

    def das(self, block: np.ndarray, t: np.ndarray) -> None:
        if self.active(t[0], t[-1]):
            block[self.gate(t) > 0, self.local] = 0.0

    def dts(self, trace: np.ndarray, t: float) -> None:
        if self.t_on <= t < self.t_off:
            trace[self.local] = 0.0


class Stuck(Effect):
    """Channels hold the value of the first sample at or after onset."""

    def __init__(self, sc: Scenario, cfg: SimConfig, rng: np.random.Generator) -> None:
        super().__init__(sc, cfg, rng)
        self._das: np.ndarray | None = None
        self._dts: np.ndarray | None = None

    def das(self, block: np.ndarray, t: np.ndarray) -> None:
        if not self.active(t[0], t[-1]):
            return
        rows = self.gate(t) > 0
        if self._das is None:
            self._das = block[int(np.argmax(rows)), self.local].copy()
        block[rows, self.local] = self._das

    def dts(self, trace: np.ndarray, t: float) -> None:
        if self.t_on <= t < self.t_off:
            if self._dts is None:
                self._dts = trace[self.local].copy()
            trace[self.local] = self._dts


class Spikes(Effect):
    """Isolated single-sample spikes at random channels of the range."""

    def das(self, block: np.ndarray, t: np.ndarray) -> None:
        if not self.active(t[0], t[-1]):
            return
        rng, sl = self.rng, self.local
        width = sl.stop - sl.start
        count = rng.poisson(self.sc.param("rate") * width * len(t) / self.cfg.das_rate)
        rows = rng.integers(0, len(t), count)
        cols = rng.integers(sl.start, sl.stop, count)
        amp = 40.0 * self.sc.intensity * rng.uniform(0.7, 1.3, count) * rng.choice([-1, 1], count)
        keep = (t[rows] >= self.t_on) & (t[rows] < self.t_off)
        block[rows[keep], cols[keep]] += amp[keep].astype(np.float32)

    def dts(self, trace: np.ndarray, t: float) -> None:
        if not self.t_on <= t < self.t_off:
            return
        rng, sl = self.rng, self.local
        count = rng.poisson(self.sc.param("rate") * (sl.stop - sl.start) * self.cfg.dts_interval_s)
        cols = rng.integers(sl.start, sl.stop, count)
        trace[cols] += (5.0 * self.sc.intensity * rng.choice([-1, 1], count)).astype(np.float32)


class FiberBreak(Effect):
    """No backscatter beyond the break: noise from the break point to the end of the fiber."""

    def _label_range(self) -> tuple[int, int]:
        sc, cfg = self.sc, self.cfg
        at = sc.channel if sc.channel is not None else sc.ch_start
        return (at if at is not None else cfg.first_channel), cfg.last_channel

    def das(self, block: np.ndarray, t: np.ndarray) -> None:
        if not self.active(t[0], t[-1]):
            return
        rows = self.gate(t) > 0
        sl = self.local
        noise = self.rng.random((int(rows.sum()), sl.stop - sl.start), dtype=np.float32)
        noise -= np.float32(0.5)
        noise *= np.float32(10.0 * math.sqrt(12.0) * self.sc.intensity)
        block[rows, sl] = noise

    def dts(self, trace: np.ndarray, t: float) -> None:
        if not self.t_on <= t < self.t_off:
            return
        sl = self.local
        last = float(trace[sl.start - 1]) if sl.start > 0 else 15.0
        noise = self.rng.normal(last, 8.0 * self.sc.intensity, sl.stop - sl.start)
        trace[sl] = noise.astype(np.float32)


class Dropped(Effect):
    """Frames lost between interrogator and broker; see `dropped`."""

    def _label_range(self) -> tuple[int, int]:
        return self.cfg.first_channel, self.cfg.last_channel

    def dropped(self, stream: str, period: float) -> list[int]:
        """Sequence numbers lost on `stream`, whose frame `k` starts at ``k * period`` s.

        Called once per stream, DAS first (the draws are consumed in that order).
        """
        if stream not in self.streams:
            return []
        p = min(self.sc.intensity, 1.0)
        k = math.ceil(self.t_on / period - 1e-9)
        lost = []
        while k * period < self.t_off - 1e-9:
            if self.cfg.seconds is not None and k * period >= self.cfg.seconds - 1e-9:
                break
            if self.rng.random() < p:
                lost.append(k)
            k += 1
        return lost
