"""Interrogator files as wire frames for offline use (``fiberwatch score``, ``model train``).

The same reader and converter as the live bridge, with the stream's geometry taken from the
first file instead of a config: a DAS file (HDF5/TDMS through DASCore) or a directory of
them, or a directory of DTS CSV files. Every later file must agree with the first
(`FileError` otherwise); files follow in name order with continuous sequence numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_agent.bridge import convert
from edge_agent.bridge.config import DasInput, DtsInput
from edge_agent.bridge.reader import FileError, read_file
from edge_agent.offline import InputError, read_csv

DAS_SUFFIXES = (".h5", ".hdf5", ".he5", ".tdms", ".prodml")


def is_interrogator_input(path: Path) -> bool:
    """A DAS file by its suffix, or a directory (of DAS or DTS files)."""
    return path.is_dir() or path.suffix.lower() in DAS_SUFFIXES


def list_files(path: Path, stream: str) -> list[Path]:
    """The stream's files: `path` itself, or its directory's matching files by name."""
    if not path.is_dir():
        return [path]
    suffixes = DAS_SUFFIXES if stream == "das" else (".csv", ".txt")
    found = sorted(p for p in path.iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in suffixes)
    if not found:
        raise FileError("empty", f"{path}: no {stream} files ({', '.join(suffixes)})")
    return found


def das_input_for(path: Path, frame_samples: int = 100) -> DasInput:
    """A `DasInput` describing a DAS file's own geometry (units and gauge left unchecked)."""
    import dascore as dc

    try:
        patch = dc.spool(path)[0]
        t, d = patch.get_coord("time"), patch.get_coord("distance")
        step_ns = float(np.timedelta64(t.step, "ns").astype(np.int64))
        spacing = float(d.step) if len(d) > 1 else 1.0
        start = float(d.min())
    except Exception as exc:  # noqa: BLE001 - any library error on hostile input is typed
        raise FileError("unreadable", f"{path}: {type(exc).__name__}: {exc}") from None
    c = start / spacing
    first, offset = (round(c), 0.0) if abs(c - round(c)) < 0.01 and c >= 0 else (0, start)
    return DasInput(channels=len(d), sample_rate_hz=1e9 / step_ns, spacing_m=spacing,
                    fiber_offset_m=offset, first_channel=first, frame_samples=frame_samples)


def dts_input_for(paths: list[Path]) -> DtsInput:
    """A `DtsInput` from the CSV files' header and time steps."""
    try:
        t, x, _ = read_csv(paths[0], min_rows=1)
        if len(t) < 2 and len(paths) > 1:
            t = np.concatenate([t, read_csv(paths[1], min_rows=1)[0][:1]])
    except InputError as exc:
        raise FileError("unreadable", str(exc)) from None
    if len(t) < 2:
        raise FileError("sample_rate", f"{paths[0]}: one trace: no trace interval")
    return DtsInput(channels=x.shape[1], sample_rate_hz=min(1.0, 1e9 / float(t[1] - t[0])))


def file_frames(path: Path, stream: str = "das", frame_samples: int = 100
                ) -> tuple[Iterator[bytes], int, int]:
    """``(frames, n_channels, first_channel)`` of a file or directory of one stream."""
    paths = list_files(path, stream)
    inp: DasInput | DtsInput = (das_input_for(paths[0], frame_samples) if stream == "das"
                                else dts_input_for(paths))
    return _frames(paths, inp), inp.channels, inp.first_channel


def _frames(paths: list[Path], inp: DasInput | DtsInput) -> Iterator[bytes]:
    next_seq, end_ns = 0, None
    for p in paths:
        try:
            blocks = read_file(p, inp)
            plan = convert.plan(blocks, inp, next_seq, end_ns)
        except FileError as exc:
            raise FileError(exc.reason, f"{p.name}: {exc.detail}") from None
        next_seq, end_ns = plan.next_seq, blocks[-1].end_ns
        yield from convert.frames(blocks, plan, inp)
