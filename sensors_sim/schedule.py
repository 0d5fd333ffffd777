"""Schedule files (TOML or JSON), the demo fleet, and random scenario draws.

A schedule describes one fiber or several. One fiber: settings at the top level and
``[[scenario]]`` tables::

    seed = 7
    site = "well-a"
    gateway = "gw1"
    channels = 1024
    seconds = 60

    [[scenario]]
    kind = "leak"
    onset = 10
    duration = 20
    channel = 300
    intensity = 1.0

Several fibers: shared settings at the top level and one ``[[gateways]]`` table each, with
its own ``[[gateways.scenario]]`` tables. JSON uses the same keys (``"gateways": [...]``).
Every key is a `SimConfig` field; scenario keys are `Scenario` fields (``channels =
"280-320"`` gives a range) or kind parameters.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sensors_sim.config import BENIGN, KINDS, ConfigError, Scenario, SimConfig
from sensors_sim.specs import config_from_dict


@dataclass(frozen=True, slots=True)
class Schedule:
    """A run: one `SimConfig` per fiber and the seed (None if the file gives none)."""

    configs: tuple[SimConfig, ...]
    seed: int | None = None


def load_schedule(path: str | Path) -> Schedule:
    """Read a TOML (``.toml``) or JSON schedule; raise `ConfigError` with the reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read schedule {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a schedule must be a table/object")
    return schedule_from_dict(data)


def schedule_from_dict(data: Mapping[str, Any]) -> Schedule:
    """Build a `Schedule` from the parsed contents of a schedule file."""
    d = dict(data)
    seed = d.pop("seed", None)
    if seed is not None and not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    gateways = d.pop("gateways", None)
    if gateways is None:
        return Schedule((config_from_dict(d),), seed)
    if not isinstance(gateways, list) or not gateways:
        raise ConfigError("'gateways' must be a non-empty list of tables")
    shared = {k: v for k, v in d.items() if k not in ("scenario", "scenarios")}
    if len(shared) != len(d):
        raise ConfigError("with [[gateways]] tables, put scenarios under [[gateways.scenario]]")
    if not all(isinstance(g, dict) for g in gateways):
        raise ConfigError("'gateways' must be a list of tables")
    configs = tuple(config_from_dict({**shared, **g}) for g in gateways)
    names = [(c.site, c.gateway) for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError("two gateways share the same site and gateway names")
    return Schedule(configs, seed)


def demo_fleet(seconds: float | None = 60.0, channels: int = 1024,
               with_anomalies: bool = True) -> tuple[SimConfig, ...]:
    """The demo's three interrogators: two wells and one pipeline.

    With `with_anomalies`, ``well-a`` gets a leak, ``well-b`` sand ingress then a dead
    stretch, and the pipeline slugging; onsets are a fraction of `seconds` (or of 10 min
    for an endless run, repeating every 10 min is up to the caller).
    """
    span = seconds if seconds is not None else 600.0
    c = channels

    def at(frac: float) -> float:
        return round(span * frac, 3)

    sc: dict[str, tuple[Scenario, ...]] = {"a": (), "b": (), "p": ()}
    if with_anomalies:
        sc["a"] = (Scenario("leak", at(0.3), at(0.3), channel=int(c * 0.3)),)
        sc["b"] = (Scenario("sand", at(0.25), at(0.25), ch_start=int(c * 0.72),
                            ch_end=int(c * 0.78)),
                   Scenario("dead", at(0.65), at(0.15), ch_start=int(c * 0.5),
                            ch_end=int(c * 0.5) + 7))
        sc["p"] = (Scenario("slug", at(0.4), at(0.3), ch_start=int(c * 0.2),
                            ch_end=int(c * 0.6)),)
    return (
        SimConfig(site="well-a", gateway="gw1", geometry="well", channels=c, seconds=seconds,
                  scenarios=sc["a"]),
        SimConfig(site="well-b", gateway="gw2", geometry="well", channels=c, seconds=seconds,
                  scenarios=sc["b"]),
        SimConfig(site="pipeline-1", gateway="gw3", geometry="pipeline", channels=c,
                  seconds=seconds, scenarios=sc["p"]),
    )


#: what `random_scenarios` draws by default: every anomaly kind, no benign one
RANDOM_KINDS = tuple(k for k in KINDS if k not in BENIGN)


def random_scenarios(
    cfg: SimConfig, seed: int, *, per_minute: float = 2.0,
    kinds: Sequence[str] = RANDOM_KINDS,
    intensity: tuple[float, float] = (0.5, 1.5), duration: tuple[float, float] = (3.0, 15.0),
) -> SimConfig:
    """`cfg` with random, non-overlapping scenarios added (for training/evaluation sets).

    Onsets follow a Poisson process of `per_minute`; each draws a kind, intensity, duration
    and channel uniformly. Requires a finite ``cfg.seconds``.
    """
    if cfg.seconds is None:
        raise ConfigError("random_scenarios needs a finite run length")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ConfigError(f"unknown kinds {unknown}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5CE9,)))
    out: list[Scenario] = []
    t = float(rng.exponential(60.0 / per_minute))
    lo_ch, hi_ch = cfg.first_channel, cfg.last_channel
    while t < cfg.seconds - 1.0:
        kind = str(rng.choice(list(kinds)))
        dur = float(rng.uniform(*duration))
        centre = int(rng.integers(lo_ch + 8, hi_ch - 8)) if hi_ch - lo_ch > 16 else lo_ch
        half = int(rng.integers(3, 20))
        kw: dict[str, Any] = {"channel": centre} if kind in ("leak", "fiber_break") else {
            "ch_start": max(lo_ch, centre - half), "ch_end": min(hi_ch, centre + half)}
        level = float(rng.uniform(*intensity))
        if kind == "dropped":
            level, kw = min(level, 1.0), {}
        out.append(Scenario(kind, round(t, 3), round(dur, 3), intensity=round(level, 3), **kw))
        t += dur + float(rng.exponential(60.0 / per_minute))
    return replace(cfg, scenarios=cfg.scenarios + tuple(out))
