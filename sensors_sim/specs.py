"""Parsing: schedule-file tables and command-line specs into `SimConfig` and `Scenario`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from sensors_sim.config import KINDS, ConfigError, Pump, Scenario, SimConfig, require


def config_from_dict(data: Mapping[str, Any]) -> SimConfig:
    """Build a `SimConfig` from a mapping (a schedule-file table).

    Keys are `SimConfig` fields; ``scenario`` and ``pump`` hold lists of tables.
    """
    known = {f.name for f in fields(SimConfig)}
    args: dict[str, Any] = {}
    try:
        for key, value in data.items():
            if key in ("scenario", "scenarios"):
                args["scenarios"] = tuple(scenario_from_dict(s) for s in value)
            elif key in ("pump", "pumps"):
                args["pumps"] = tuple(Pump(**p) for p in value)
            elif key == "streams":
                args["streams"] = tuple(value)
            elif key in known:
                args[key] = value
            else:
                raise ConfigError(f"unknown setting {key!r}")
        return SimConfig(**args)
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"bad setting: {exc}") from None


def scenario_from_dict(data: Mapping[str, Any]) -> Scenario:
    """Build a `Scenario` from a mapping; unknown keys become kind parameters."""
    d = dict(data)
    kind = str(d.get("kind", ""))
    require(kind in KINDS, f"unknown anomaly kind {kind!r}; choose from {', '.join(KINDS)}")
    try:
        kind = str(d.pop("kind"))
        onset = float(d.pop("onset"))
        duration = float(d.pop("duration"))
    except KeyError as exc:
        raise ConfigError(f"scenario needs {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"scenario: {exc}") from None
    kw: dict[str, Any] = {}
    if "channels" in d:
        kw["ch_start"], kw["ch_end"] = _channel_range(str(d.pop("channels")))
    for key in ("channel", "ch_start", "ch_end"):
        if key in d:
            kw[key] = _as_int(d.pop(key), key)
    if "intensity" in d:
        try:
            kw["intensity"] = float(d.pop("intensity"))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{kind} intensity: {exc}") from None
    if "streams" in d or "stream" in d:
        raw = d.pop("streams", None) or d.pop("stream")
        names = raw.split("+") if isinstance(raw, str) else list(raw)
        kw["streams"] = ("das", "dts") if names == ["both"] else tuple(names)
    try:
        params = {k: float(v) for k, v in d.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind}: {exc}") from None
    return Scenario(kind, onset, duration, params=params, **kw)


def parse_scenario(spec: str) -> Scenario:
    """Parse a command-line scenario, e.g. ``leak:onset=10,duration=20,channel=300``.

    Keys are `Scenario` fields or kind parameters; ``channels=280-320`` gives a range and
    ``stream=das+dts`` (or ``both``) the streams.
    """
    kind, sep, rest = spec.partition(":")
    require(bool(sep) and bool(kind), f"scenario {spec!r} must look like KIND:key=value,...")
    data: dict[str, Any] = {"kind": kind.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        require(bool(eq) and bool(key), f"scenario item {item!r} must be key=value")
        data[key.strip()] = value.strip()
    return scenario_from_dict(data)


def _channel_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    require(bool(sep), f"channels must be START-END, got {text!r}")
    return _as_int(lo, "channels"), _as_int(hi, "channels")


def _as_int(value: Any, what: str) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an integer, got {value!r}") from None
    require(f.is_integer(), f"{what} must be an integer, got {value!r}")
    return int(f)
