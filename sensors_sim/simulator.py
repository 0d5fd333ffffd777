"""`Simulator`: one fiber's DAS and DTS frames with their ground-truth labels.

Frames come out in the order an interrogator would send them (by end time; DAS first on a
tie); DAS frame ``k`` has ``seq = k`` and covers samples ``k*n .. (k+1)*n - 1``; DTS trace
``j`` has ``seq = j`` and integrates over ``[j*interval, (j+1)*interval)``. Dropped frames
are generated (so nothing else changes) but not emitted.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge_agent import wire
from sensors_sim import anomalies, faults
from sensors_sim.config import KINDS, ConfigError, SimConfig
from sensors_sim.das import DasBackground
from sensors_sim.dts import DtsBackground
from sensors_sim.labels import Label

EFFECTS: dict[str, type[anomalies.Effect]] = {
    "leak": anomalies.Leak, "sand": anomalies.Sand, "slug": anomalies.Slug,
    "valve": anomalies.Valve,
    "dead": faults.Dead, "stuck": faults.Stuck, "spikes": faults.Spikes,
    "fiber_break": faults.FiberBreak, "dropped": faults.Dropped,
}
_ORDER = {kind: i for i, kind in enumerate(KINDS)}  # process signals first, then faults


@dataclass(frozen=True, slots=True)
class Block:
    """One frame before encoding: `data` is float32 ``(n_samples, n_channels)``."""

    stream: str
    seq: int
    t0_ns: int
    sample_rate: float
    first_channel: int
    data: np.ndarray
    dropped: bool = False

    @property
    def end_ns(self) -> int:
        return self.t0_ns + round(self.data.shape[0] * 1e9 / self.sample_rate)


class Simulator:
    """A deterministic DAS/DTS interrogator for one fiber.

    Parameters
    ----------
    config : SimConfig
        Fiber, sampling, background and scenarios.
    seed : int
        Same seed, config and scenarios give byte-identical frames. The site and gateway
        names are mixed in, so one seed gives every gateway of a fleet its own noise.

    Examples
    --------
    >>> from sensors_sim import SimConfig, Simulator, parse_scenario
    >>> cfg = SimConfig(channels=64, seconds=1.0,
    ...                 scenarios=(parse_scenario("leak:onset=0.2,duration=0.5,channel=30"),))
    >>> sim = Simulator(cfg, seed=1)
    >>> [lb.kind for lb in sim.labels()]
    ['leak']
    >>> sum(1 for stream, frame in sim.frames() if stream == "das")
    20
    """

    def __init__(self, config: SimConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = int(seed)
        self._key = zlib.crc32(f"{config.site}/{config.gateway}".encode())
        self._effects = self._make_effects()
        self._dropped: dict[str, set[int]] = {s: set() for s in ("das", "dts")}
        self._labels = [self._label(i, e) for i, e in enumerate(self._effects)]

    def _seed(self, *path: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=(self._key, *path))

    def _make_effects(self) -> list[anomalies.Effect]:
        cfg = self.config
        effects = []
        for i, sc in enumerate(cfg.scenarios):
            effect = EFFECTS[sc.kind](sc, cfg, np.random.default_rng(self._seed(100 + i)))
            if not effect.streams:
                raise ConfigError(f"{sc.kind} affects {sc.affected_streams}, none of which is "
                                  f"emitted (streams={cfg.streams})")
            effects.append(effect)
        return effects

    def _label(self, index: int, e: anomalies.Effect) -> Label:
        cfg, sc = self.config, e.sc
        end = e.t_off if cfg.seconds is None else min(e.t_off, cfg.seconds)
        dropped: dict[str, list[int]] = {}
        if isinstance(e, faults.Dropped):
            periods = {"das": cfg.frame_s, "dts": cfg.dts_interval_s}
            for stream in e.streams:
                dropped[stream] = e.dropped(stream, periods[stream])
                self._dropped[stream].update(dropped[stream])
        return Label(
            id=f"{cfg.site}/{cfg.gateway}/{index}-{sc.kind}", kind=sc.kind, site=cfg.site,
            gateway=cfg.gateway, streams=e.streams, start_ns=self._ns(e.t_on),
            end_ns=self._ns(end), ch_start=e.ch_start, ch_end=e.ch_end,
            dist_start_m=e.ch_start * cfg.spacing_m, dist_end_m=e.ch_end * cfg.spacing_m,
            intensity=sc.intensity,
            params={k: sc.param(k) for k in KINDS[sc.kind][1]}, dropped_seqs=dropped,
        )

    def _ns(self, seconds: float) -> int:
        return self.config.start_ns + round(seconds * 1e9)

    def labels(self) -> list[Label]:
        """Ground truth: one `Label` per scenario, in schedule order (known before running)."""
        return list(self._labels)

    def n_frames(self) -> dict[str, int] | None:
        """Frames generated per stream (dropped ones included), or None for an endless run."""
        cfg = self.config
        if cfg.seconds is None:
            return None
        n = {"das": int(cfg.seconds / cfg.frame_s + 1e-9),
             "dts": int(cfg.seconds / cfg.dts_interval_s + 1e-9)}
        return {s: n[s] for s in cfg.streams}

    def blocks(self, *, copy: bool = True, include_dropped: bool = False) -> Iterator[Block]:
        """Generate the run as unencoded `Block`s, in sending order.

        Parameters
        ----------
        copy : bool
            If False, a DAS block's `data` is a buffer reused by the next block.
        include_dropped : bool
            Also yield the frames a ``dropped`` scenario loses (with ``dropped=True``).
        """
        cfg = self.config
        das = DasBackground(cfg, self._seed(0)) if "das" in cfg.streams else None
        dts = DtsBackground(cfg, self._seed(1)) if "dts" in cfg.streams else None
        effects = sorted(self._make_effects(), key=lambda e: _ORDER[e.sc.kind])  # fresh state
        limits = self.n_frames()
        n = cfg.frame_samples
        k = j = 0
        while True:
            das_end = (k + 1) * cfg.frame_s if das is not None else float("inf")
            dts_end = (j + 1) * cfg.dts_interval_s if dts is not None else float("inf")
            if limits is not None:
                if das is None or k >= limits["das"]:
                    das_end = float("inf")
                if dts is None or j >= limits["dts"]:
                    dts_end = float("inf")
                if das_end == dts_end == float("inf"):
                    return
            if das is not None and das_end <= dts_end + 1e-9:
                t = k * n / cfg.das_rate + das.block_times
                data = das.block(k)
                for e in effects:
                    if "das" in e.streams:
                        e.das(data, t)
                lost = k in self._dropped["das"]
                if include_dropped or not lost:
                    yield Block("das", k, self._sample_ns(k * n), cfg.das_rate,
                                cfg.first_channel, data.copy() if copy else data, lost)
                k += 1
            else:
                assert dts is not None
                t_s = j * cfg.dts_interval_s
                trace = dts.trace(j)
                for e in effects:
                    if "dts" in e.streams:
                        e.dts(trace, t_s)
                lost = j in self._dropped["dts"]
                if include_dropped or not lost:
                    yield Block("dts", j, self._ns(t_s), 1.0 / cfg.dts_interval_s,
                                cfg.first_channel, trace[None, :], lost)
                j += 1

    def _sample_ns(self, sample: int) -> int:
        rate = self.config.das_rate
        if float(rate).is_integer():
            return self.config.start_ns + sample * 10**9 // int(rate)
        return self._ns(sample / rate)

    def frames(self) -> Iterator[tuple[str, bytes]]:
        """Generate the run as encoded wire frames: ``(stream, frame_bytes)`` in sending order."""
        cfg = self.config
        das_dtype = wire.DType.INT16 if cfg.das_dtype == "int16" else wire.DType.FLOAT32
        das_scale = cfg.das_scale if cfg.das_dtype == "int16" else 1.0
        for b in self.blocks(copy=False):
            if b.stream == "das":
                frame = wire.encode(wire.StreamKind.DAS, b.seq, b.t0_ns, b.sample_rate,
                                    b.first_channel, b.data, dtype=das_dtype, scale=das_scale)
            else:
                frame = wire.encode(wire.StreamKind.DTS, b.seq, b.t0_ns, b.sample_rate,
                                    b.first_channel, b.data)
            yield b.stream, frame
