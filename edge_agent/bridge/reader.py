"""Read an interrogator's file into `Block`s: contiguous samples with their geometry.

DAS files go through DASCore (`dascore.read`: PRODML, DASDAE, Silixa, TDMS, Febus, Terra15,
...), imported here lazily so the edge agent never needs it. DTS text/CSV files go through
the offline scorer's CSV reader (`edge_agent.offline.read_csv`): a time column and one column
per channel, one row per trace.

A file's geometry is checked against the configured stream: channel count, sample rate and
channel spacing must agree, and its gauge length and units (when the config names them); a
file that does not is refused with a `FileError` naming the field, never half-converted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bridge.config import DasInput, DtsInput
from edge_agent.errors import ReasonedError
from edge_agent.offline import InputError, read_csv

#: relative tolerance on rates, spacings and gauge lengths read from files
TOL = 1e-3


class FileError(ReasonedError):
    """A file that cannot be bridged. `reason` is a short stable code (a counter label)."""


@dataclass(frozen=True, slots=True)
class Block:
    """Contiguous samples of one stream: `data` is ``(n_samples, n_channels)``, physical
    values (float32), or raw integers when `integer` (physical = raw * the config's scale)."""

    kind: str
    t0_ns: int
    sample_rate: float
    first_channel: int
    data: np.ndarray
    integer: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def end_ns(self) -> int:
        return self.t0_ns + round(self.data.shape[0] * 1e9 / self.sample_rate)


def read_file(path: Path, cfg: DasInput | DtsInput) -> list[Block]:
    """The blocks of one file, in time order; raise `FileError` on anything unusable."""
    if isinstance(cfg, DtsInput):
        return [read_dts(path, cfg)]
    return read_das(path, cfg)


# --- DAS through DASCore


def read_das(path: Path, cfg: DasInput) -> list[Block]:
    """Every patch of a DAS file as a checked `Block` (time-major)."""
    import dascore as dc  # lazily: the bridge extra only

    try:
        spool = dc.read(path, file_format=None if cfg.format == "auto" else cfg.format)
        # PRODML files may carry processed frequency-band data (FBE) beside the raw data
        patches = sorted((p for p in spool if "raw_reference" not in type(p.attrs).model_fields),
                         key=lambda p: p.get_coord("time").min())
    except Exception as exc:  # noqa: BLE001 - any library error on hostile input is typed
        raise FileError("unreadable", f"{type(exc).__name__}: {exc}") from None
    if not patches:
        raise FileError("empty", "no data in the file")
    return [_das_block(p, cfg) for p in patches]


def _das_block(patch: Any, cfg: DasInput) -> Block:
    if set(patch.dims) != {"time", "distance"}:
        raise FileError("dims", f"dimensions {patch.dims}, expected time and distance")
    patch = _units(patch.transpose("time", "distance"), cfg)
    t, d = patch.get_coord("time"), patch.get_coord("distance")
    rate = _rate(t)
    _check_close("sample_rate", rate, cfg.sample_rate_hz, "Hz")
    n_ch = len(d)
    if n_ch != cfg.channels:
        raise FileError("channels", f"{n_ch} channels, the stream has {cfg.channels}")
    if n_ch > 1:
        _check_close("spacing", _float(d.step, "distance step"), cfg.spacing_m, "m")
    first = (float(d.min()) - cfg.fiber_offset_m) / cfg.spacing_m
    if abs(first - round(first)) > 0.01 or round(first) != cfg.first_channel:
        raise FileError("first_channel", f"distance {float(d.min()):g} m is channel "
                        f"{first:g}, the stream starts at {cfg.first_channel}")
    gauge = _gauge(patch.attrs, cfg)
    data = np.asarray(patch.data)
    integer = np.issubdtype(data.dtype, np.integer)
    if not (integer or np.issubdtype(data.dtype, np.floating)):
        raise FileError("dtype", f"data of type {data.dtype}")
    t0 = np.datetime64(t.min(), "ns").astype(np.int64)
    meta = {"units": str(patch.attrs.get("data_units") or ""), "gauge_length_m": gauge,
            "data_type": str(patch.attrs.get("data_type") or ""), "dtype": str(data.dtype)}
    meta["file_sample_rate_hz"] = rate
    # the configured rate: a file's time axis in whole microseconds (PRODML) gives e.g.
    # 3000.0003 Hz for 3 kHz, within TOL, while the agent wants its stream's rate to 1e-6
    return Block("das", int(t0), cfg.sample_rate_hz, cfg.first_channel, data, integer, meta)


def _units(patch: Any, cfg: DasInput) -> Any:
    if cfg.units is None:
        return patch
    have = patch.attrs.get("data_units")
    if have is None or str(have) == "":
        raise FileError("units", f"the file names no data units, the stream needs {cfg.units}")
    from dascore.units import get_quantity

    try:
        if get_quantity(have) == get_quantity(cfg.units):
            return patch  # same units: keep integer counts integer
        return patch.convert_units(cfg.units)
    except Exception as exc:  # noqa: BLE001 - pint/DASCore unit errors
        raise FileError("units", f"cannot convert {have} to {cfg.units}: {exc}") from None


def _rate(t: Any) -> float:
    step = t.step
    if step is None or (isinstance(step, float) and math.isnan(step)):
        values = np.asarray(t.values).astype("datetime64[ns]").astype(np.int64)
        if len(values) < 2:
            raise FileError("sample_rate", "a single time sample: no rate")
        steps = np.diff(values)
        step_ns = float(values[-1] - values[0]) / (len(values) - 1)
        # times stored in whole microseconds (PRODML) jitter by 1 us around a step of
        # 333.33 us (3 kHz): allow that, or TOL of the step, whichever is larger
        slack = max(TOL * step_ns, 1000.0)
        if steps.min() <= 0 or np.abs(steps - step_ns).max() > slack:
            raise FileError("time", "time samples are not evenly spaced")
    else:
        step_ns = float(np.timedelta64(step, "ns").astype(np.int64))
    if not step_ns > 0:
        raise FileError("sample_rate", f"time step {step}")
    return 1e9 / step_ns


def _float(v: Any, what: str) -> float:
    try:
        out = float(getattr(v, "magnitude", v))
    except (TypeError, ValueError):
        raise FileError("geometry", f"{what} {v!r} is not a number") from None
    return out


def _check_close(reason: str, got: float, want: float, unit: str) -> None:
    if not (math.isfinite(got) and abs(got - want) <= TOL * abs(want)):
        raise FileError(reason, f"{got:g} {unit} in the file, the stream has {want:g} {unit}")


def _gauge(attrs: Any, cfg: DasInput) -> float | None:
    g = attrs.get("gauge_length")
    try:
        gauge = float(getattr(g, "magnitude", g)) if g is not None else math.nan
    except (TypeError, ValueError):
        gauge = math.nan
    if not math.isfinite(gauge):
        return None
    if cfg.gauge_length_m is not None:
        _check_close("gauge_length", gauge, cfg.gauge_length_m, "m")
    return gauge


# --- DTS through the CSV reader


def read_dts(path: Path, cfg: DtsInput) -> Block:
    """A DTS CSV file (one row per trace) as one `Block` of float32 temperatures."""
    try:
        t, x, _names = read_csv(path, min_rows=1)
    except InputError as exc:
        raise FileError("unreadable", str(exc)) from None
    if x.shape[1] != cfg.channels:
        raise FileError("channels", f"{x.shape[1]} channels, the stream has {cfg.channels}")
    if len(t) > 1:
        steps = np.diff(t)
        want = 1e9 / cfg.sample_rate_hz
        if np.any(np.abs(steps - want) > 0.5 * want):
            got = 1e9 / float(np.median(steps))
            raise FileError("sample_rate", f"{got:g} traces/s in the file, the stream has "
                            f"{cfg.sample_rate_hz:g}")
    return Block("dts", int(t[0]), cfg.sample_rate_hz, cfg.first_channel, x, False,
                 {"units": "degC", "traces": len(t)})
