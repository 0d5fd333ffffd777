"""Recorded runs: the ``.fwrec`` container of wire frames.

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic       b"FWRC"
    4       2     version     1
    6       2     reserved    0
    8       4     meta_len    length of the metadata JSON
    12      ...   meta        UTF-8 JSON object (site, gateway, seed, config, ...), may be {}
    ...           records     repeated: u32 frame_len, then frame_len bytes of one
                              `edge_agent.wire` frame (any stream, in sending order)

The file ends after the last complete record; a record cut short raises `RecordingError`.
Frames are stored exactly as sent, so reading them back gives byte-identical frames.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from edge_agent import wire

MAGIC = b"FWRC"
VERSION = 1
_HEAD = struct.Struct("<4sHHI")
_LEN = struct.Struct("<I")
MAX_FRAME = wire.HEADER_SIZE + wire.MAX_PAYLOAD + wire.CRC_SIZE
MAX_META = 16 * 1024 * 1024


class RecordingError(ValueError):
    """A file that is not a well-formed ``.fwrec`` recording."""


class RecordingWriter:
    """Append frames to a new recording; use as a context manager.

    Parameters
    ----------
    path : str or Path
        File to create (overwritten).
    meta : dict, optional
        JSON-serialisable metadata stored in the header.
    """

    def __init__(self, path: str | Path, meta: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        body = json.dumps(meta or {}, separators=(",", ":"), sort_keys=True).encode()
        self._f: IO[bytes] = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(_HEAD.pack(MAGIC, VERSION, 0, len(body)) + body)
        self.frames = 0
        self.bytes = 0

    def write(self, frame: bytes) -> None:
        """Append one frame (its bytes as sent)."""
        if not 0 < len(frame) <= MAX_FRAME:
            raise ValueError(f"frame of {len(frame)} bytes cannot be recorded")
        self._f.write(_LEN.pack(len(frame)))
        self._f.write(frame)
        self.frames += 1
        self.bytes += len(frame)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_frames(path: str | Path, frames: Iterable[bytes], meta: dict[str, Any] | None = None
                 ) -> int:
    """Write `frames` (raw wire-frame bytes) to a new recording; return how many."""
    with RecordingWriter(path, meta) as w:
        for frame in frames:
            w.write(frame)
        return w.frames


def _open(path: str | Path) -> tuple[IO[bytes], dict[str, Any]]:
    f = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    try:
        head = f.read(_HEAD.size)
        if len(head) < _HEAD.size:
            raise RecordingError(f"{path}: too short for a recording header")
        magic, version, _reserved, meta_len = _HEAD.unpack(head)
        if magic != MAGIC:
            raise RecordingError(f"{path}: not a recording (magic {magic!r})")
        if version != VERSION:
            raise RecordingError(f"{path}: unsupported recording version {version}")
        if meta_len > MAX_META:
            raise RecordingError(f"{path}: metadata length {meta_len} too large")
        raw = f.read(meta_len)
        if len(raw) != meta_len:
            raise RecordingError(f"{path}: truncated metadata")
        try:
            meta = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise RecordingError(f"{path}: metadata is not JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise RecordingError(f"{path}: metadata must be a JSON object")
    except BaseException:
        f.close()
        raise
    return f, meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata stored in a recording's header."""
    f, meta = _open(path)
    f.close()
    return meta


def read_frames(path: str | Path) -> Iterator[bytes]:
    """Iterate over the raw frames of a recording, in the order they were written.

    The frames are not decoded (use `edge_agent.wire.decode`). Raises `RecordingError` if
    the file is not a recording or a record is cut short.
    """
    f, _meta = _open(path)
    with f:
        index = 0
        while True:
            prefix = f.read(_LEN.size)
            if not prefix:
                return
            if len(prefix) < _LEN.size:
                raise RecordingError(f"{path}: record {index} length cut short")
            (n,) = _LEN.unpack(prefix)
            if not 0 < n <= MAX_FRAME:
                raise RecordingError(f"{path}: record {index} has impossible length {n}")
            frame = f.read(n)
            if len(frame) != n:
                raise RecordingError(f"{path}: record {index} cut short ({len(frame)} of {n})")
            yield frame
            index += 1


def peek(frame: bytes) -> tuple[wire.StreamKind, int, int, int]:
    """``(kind, seq, t0_ns, end_ns)`` from a frame's header, without checking the payload.

    Raises `edge_agent.wire.FrameError` if the header itself is malformed.
    """
    if len(frame) < wire.HEADER_SIZE:
        raise wire.FrameError("short", f"{len(frame)} bytes")
    (magic, _v, kind, _dt, _fl, seq, t0_ns, rate, _fc, _nc, n_samp, _sc,
     _pl) = wire.HEADER.unpack_from(frame, 0)
    if magic != wire.MAGIC:
        raise wire.FrameError("magic", f"bad magic {bytes(magic)!r}")
    if kind not in wire.StreamKind._value2member_map_:
        raise wire.FrameError("kind", f"unknown stream kind {kind}")
    if not (math.isfinite(rate) and rate > 0):
        raise wire.FrameError("sample_rate", f"sample rate {rate} not finite and positive")
    return wire.StreamKind(kind), int(seq), int(t0_ns), int(t0_ns + round(n_samp * 1e9 / rate))
