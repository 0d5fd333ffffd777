"""Write a simulated run as an interrogator would: rolling DAS files and DTS CSV files.

DAS formats:

- ``DASDAE`` — DASCore's own HDF5 format (DAS-RCN), written by `dascore.write`.
- ``PRODML`` — the Energistics PRODML 2.1 HDF5 layout (``/Acquisition`` with its
  ``NumberOfLoci``/``StartLocusIndex``/``SpatialSamplingInterval``/``GaugeLength`` attributes,
  ``Raw[0]/RawData`` and ``Raw[0]/RawDataTime``). DASCore reads PRODML but does not write it,
  so it is written here with h5py and every test reads it back through DASCore.

An ``int16`` run writes raw counts (physical = raw * ``das_scale``), as units with integer
phase output do; a ``float32`` run writes physical values. DTS traces go to CSV files (a
``time`` column in ISO 8601, one column per channel, one row per trace), the text format the
bridge and ``fiberwatch score`` read. Every file is written under a hidden temporary name and
renamed when complete, so a watcher never sees half a file by its final name.
"""

from __future__ import annotations

import csv
import os
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sensors_sim.config import ConfigError
from sensors_sim.simulator import Block, Simulator

DAS_FORMATS = ("DASDAE", "PRODML")


def _stamp(t_ns: int) -> str:
    dt = datetime.fromtimestamp(t_ns // 10**9, UTC)
    return f"{dt:%Y%m%dT%H%M%S}.{t_ns % 10**9 // 10**6:03d}Z"


def _iso(t_ns: int) -> str:
    dt = datetime.fromtimestamp(t_ns // 10**9, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{t_ns % 10**9:09d}"[:-3] + "+00:00"


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    tmp = path.with_name(f".{path.name}.part")
    write(tmp)
    os.replace(tmp, path)
    return path


class RunFileWriter:
    """Collects one simulator's blocks into files in `out_dir`.

    Parameters
    ----------
    das_format : {"DASDAE", "PRODML"}
    file_s : float
        Seconds of DAS per file (a dropped frame also ends a file).
    dts_traces : int
        DTS traces per CSV file.
    """

    def __init__(self, sim: Simulator, out_dir: Path, *, das_format: str = "DASDAE",
                 file_s: float = 10.0, dts_traces: int = 10) -> None:
        fmt = das_format.upper()
        if fmt not in DAS_FORMATS:
            raise ConfigError(f"DAS file format {das_format!r}: one of {', '.join(DAS_FORMATS)}")
        if file_s <= 0 or dts_traces < 1:
            raise ConfigError("file_s must be > 0 and dts_traces >= 1")
        self.sim, self.dir, self.format = sim, Path(out_dir), fmt
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file_samples = max(1, round(file_s * sim.config.das_rate))
        self.dts_traces = dts_traces
        self.written: list[Path] = []
        self._das: list[Block] = []
        self._dts: list[Block] = []

    def add(self, b: Block) -> None:
        pending = self._das if b.stream == "das" else self._dts
        if pending and b.seq != pending[-1].seq + 1:
            self._flush(b.stream)  # a gap ends the file
            pending = self._das if b.stream == "das" else self._dts
        pending.append(b)
        if b.stream == "das" and sum(x.data.shape[0] for x in pending) >= self.file_samples:
            self._flush("das")
        elif b.stream == "dts" and len(pending) >= self.dts_traces:
            self._flush("dts")

    def close(self) -> list[Path]:
        self._flush("das")
        self._flush("dts")
        return self.written

    def _flush(self, stream: str) -> None:
        blocks = self._das if stream == "das" else self._dts
        if not blocks:
            return
        cfg = self.sim.config
        name = f"{cfg.gateway}_{stream}_{_stamp(blocks[0].t0_ns)}"
        if stream == "das":
            data = np.concatenate([b.data for b in blocks])
            path = self.dir / f"{name}.h5"
            write = _write_dasdae if self.format == "DASDAE" else _write_prodml
            _atomic(path, lambda p: write(p, data, blocks[0].t0_ns, cfg))
            self._das = []
        else:
            path = self.dir / f"{name}.csv"
            _atomic(path, lambda p: write_dts_csv(p, blocks))
            self._dts = []
        self.written.append(path)


def _das_values(data: np.ndarray, cfg: Any) -> np.ndarray:
    if cfg.das_dtype == "int16":
        return np.clip(np.rint(data / np.float32(cfg.das_scale)), -32768, 32767).astype("<i2")
    return data.astype(np.float32)


def _write_dasdae(path: Path, data: np.ndarray, t0_ns: int, cfg: Any) -> None:
    import dascore as dc
    from dascore.core.coords import get_coord

    step = np.timedelta64(round(1e9 / cfg.das_rate), "ns")
    coords = {
        "time": get_coord(start=np.datetime64(t0_ns, "ns"), step=step, shape=(len(data),)),
        "distance": get_coord(start=cfg.first_channel * cfg.spacing_m, step=cfg.spacing_m,
                              shape=(data.shape[1],), units="m"),
    }
    patch = dc.Patch(data=_das_values(data, cfg), coords=coords, dims=("time", "distance"))
    patch = patch.update_attrs(data_type="strain_rate", data_units="1/s", gauge_length=10.0,
                               gauge_length_units="m", instrument_id=cfg.gateway)
    dc.write(patch, path, "DASDAE")


def _write_prodml(path: Path, data: np.ndarray, t0_ns: int, cfg: Any) -> None:
    import h5py

    n, channels = data.shape
    times_us = (t0_ns + np.arange(n) * (1e9 / cfg.das_rate)) // 1000
    with h5py.File(path, "w") as f:
        acq = f.create_group("Acquisition")
        a = acq.attrs
        a["schemaVersion"] = "2.1"
        a["uuid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fiberwatch-sim/{cfg.gateway}/{t0_ns}"))
        a["PulseRate"], a["PulseRate.uom"] = float(cfg.das_rate), "Hz"
        a["PulseWidth"], a["PulseWidth.uom"] = 20.0, "ns"
        a["NumberOfLoci"], a["StartLocusIndex"] = channels, cfg.first_channel
        a["SpatialSamplingInterval"], a["SpatialSamplingInterval.uom"] = cfg.spacing_m, "m"
        a["GaugeLength"], a["GaugeLength.uom"] = 10.0, "m"
        raw = acq.create_group("Raw[0]")
        raw.attrs["RawDataUnit"], raw.attrs["RawDescription"] = "1/s", "strain rate"
        raw.attrs["OutputDataRate"] = float(cfg.das_rate)
        d = raw.create_dataset("RawData", data=_das_values(data, cfg))
        d.attrs["Dimensions"] = "time, locus"
        tt = raw.create_dataset("RawDataTime", data=times_us.astype(np.int64))
        tt.attrs["PartStartTime"] = _iso(t0_ns)
        tt.attrs["PartEndTime"] = _iso(int(times_us[-1]) * 1000)


def write_dts_csv(path: Path, blocks: list[Block]) -> None:
    """DTS traces as CSV: ``time`` (ISO 8601) and one ``chN`` column per channel."""
    first = blocks[0].first_channel
    n = blocks[0].data.shape[1]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["time"] + [f"ch{first + i}" for i in range(n)])
        for b in blocks:
            for row in b.data:
                w.writerow([_iso(b.t0_ns)] + [f"{v:.9g}" for v in row])


def write_run(sim: Simulator, out_dir: Path, *, das_format: str = "DASDAE",
              file_s: float = 10.0, dts_traces: int = 10, stop: threading.Event | None = None,
              on_block: Callable[[Block], None] | None = None) -> list[Path]:
    """Simulate a run into files (see the module doc); returns the files, in write order."""
    w = RunFileWriter(sim, out_dir, das_format=das_format, file_s=file_s,
                      dts_traces=dts_traces)
    for b in sim.blocks(copy=True):
        if stop is not None and stop.is_set():
            break
        w.add(b)
        if on_block is not None:
            on_block(b)
    return w.close()
