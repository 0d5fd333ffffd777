"""Normal DTS background: one temperature trace (deg C per channel) every few seconds.

* well: geothermal gradient (15 deg C at surface, 30 mK/m), plus warming of the producing
  column above the perforations (fluid from depth is warmer than the rock it passes);
* pipeline: burial-depth soil temperature that varies slowly along the route, plus the
  fluid's warmth scaled by the flow rate;
* both: a diurnal swing that is large near the surface (first few metres) and fades with
  depth, a slow random drift of the whole trace, and measurement noise (sigma ~0.08 deg C)
  smoothed over the instrument's ~2 m spatial resolution.
"""

from __future__ import annotations

import math

import numpy as np

from sensors_sim.config import SimConfig
from sensors_sim.das import flow_rate

SURFACE_C = 15.0
GRADIENT_C_PER_M = 0.03
NOISE_C = 0.08
DIURNAL_C = 3.0


class DtsBackground:
    """Generates consecutive normal DTS traces for one fiber.

    Parameters
    ----------
    cfg : SimConfig
        The fiber.
    seed : numpy.random.SeedSequence
        Entropy for this fiber's DTS; the same seed gives the same traces.
    """

    def __init__(self, cfg: SimConfig, seed: np.random.SeedSequence) -> None:
        self.cfg = cfg
        s_noise, s_misc = seed.spawn(2)
        self._rng = np.random.default_rng(s_noise)
        misc = np.random.default_rng(s_misc)
        self._flow_phase = float(misc.uniform(0, 2 * np.pi))
        x = np.arange(cfg.channels) * cfg.spacing_m  # metres along the fiber
        self._depth_fade = np.exp(-x / 2.0)  # diurnal penetration, metres
        if cfg.geometry == "well":
            geo = SURFACE_C + GRADIENT_C_PER_M * x
            bottom = geo[int(0.9 * (cfg.channels - 1))]
            producing = np.clip((0.9 - x / max(x[-1], 1.0)) / 0.2, 0.0, 1.0)
            self._base = geo
            self._flow_warm = 0.4 * (bottom - geo) * producing
            self._diurnal_depth = self._depth_fade
        else:
            soil = 12.0 + 1.0 * np.sin(2 * np.pi * x / max(x[-1], 1.0) * 2 + misc.uniform(0, 6))
            self._base = soil
            self._flow_warm = np.full(cfg.channels, 3.0)
            self._diurnal_depth = np.full(cfg.channels, 0.15)  # buried ~1 m: a damped swing
        self._drift = 0.0
        self._noise = np.empty(cfg.channels + 2)

    def trace(self, j: int) -> np.ndarray:
        """The normal temperatures of DTS trace `j` (time ``j * dts_interval_s``), float32.

        Traces must be requested in order (the drift is a random walk).
        """
        cfg = self.cfg
        t = j * cfg.dts_interval_s
        t_abs = cfg.start_ns / 1e9 + t
        day = 2 * math.pi * ((t_abs % 86400.0) / 86400.0 - 0.375)  # warmest mid-afternoon
        flow = float(flow_rate(cfg, np.array([t]), self._flow_phase)[0])
        self._drift += float(self._rng.normal(0.0, 0.002 * math.sqrt(cfg.dts_interval_s)))
        self._rng.standard_normal(out=self._noise)
        noise = (self._noise[:-2] + self._noise[1:-1] + self._noise[2:]) * (NOISE_C / math.sqrt(3))
        out = self._base + flow * self._flow_warm
        out = out + DIURNAL_C * math.sin(day) * self._diurnal_depth + self._drift + noise
        return out.astype(np.float32)
