"""`Block`s to wire frames (`edge_agent.wire`), deterministically.

The same file and the same first sequence number always give the same frames, byte for
byte: that is what lets the bridge resume a file half published before a crash and re-send
only frames the agent already knows by their sequence number.

Encoding: DAS integer data (phase or strain-rate counts) that fits int16 is sent as int16
with the configured scale (physical = raw * scale); other data as float32, unless the config
asks for int16 (then samples are divided by the scale, and a scale too small for the data is
a `FileError`, never silent clipping). DTS traces are float32.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edge_agent import wire
from edge_agent.bridge.config import DasInput, DtsInput
from edge_agent.bridge.reader import Block, FileError

_I16 = np.iinfo(np.int16)


@dataclass(frozen=True, slots=True)
class Plan:
    """How a file's blocks become frames: the first sequence number of each block (a gap in
    time skips a number, so the agent restarts its windows), and the encoding."""

    seqs: tuple[int, ...]
    dtype: wire.DType
    scale: float
    n_frames: int
    last_frames: int  # frames of the last block

    @property
    def next_seq(self) -> int:
        """The sequence number after this file's last frame."""
        return self.seqs[-1] + self.last_frames if self.seqs else 0


def frames_per_block(block: Block, frame_samples: int) -> int:
    return -(-block.data.shape[0] // frame_samples)


def encoding(blocks: Sequence[Block], cfg: DasInput | DtsInput) -> tuple[wire.DType, float]:
    """The wire dtype and scale for a file's blocks (see the module doc)."""
    if isinstance(cfg, DtsInput):
        return wire.DType.FLOAT32, 1.0
    if cfg.dtype == "float32":
        return wire.DType.FLOAT32, 1.0
    integer = all(b.integer for b in blocks)
    if cfg.dtype == "auto":
        fits = integer and all(_fits(b.data, 1.0) for b in blocks)
        return (wire.DType.INT16, cfg.scale) if fits else (wire.DType.FLOAT32, 1.0)
    for b in blocks:  # explicit int16
        if not _fits(b.data, 1.0 if b.integer else cfg.scale):
            raise FileError("scale", f"samples exceed int16 at scale {cfg.scale:g}: "
                            "raise das.scale or use dtype float32")
    return wire.DType.INT16, cfg.scale


def _fits(data: np.ndarray, divisor: float) -> bool:
    if data.size == 0:
        return True
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        return False
    lo, hi = float(data.min()) / divisor, float(data.max()) / divisor
    return _I16.min <= round(lo) and round(hi) <= _I16.max


def plan(blocks: Sequence[Block], cfg: DasInput | DtsInput, next_seq: int,
         last_end_ns: int | None) -> Plan:
    """Sequence numbers for a file's blocks following a stream that ended at `last_end_ns`
    with `next_seq` unused; a time gap (more than half a sample) skips a number. Raises
    `FileError` when a block starts before the stream's end (an overlap or an old file)."""
    dtype, scale = encoding(blocks, cfg)
    seqs, seq, end = [], next_seq, last_end_ns
    n = 0
    for b in blocks:
        half = 0.5e9 / b.sample_rate
        if end is not None:
            if b.t0_ns < end - half:
                raise FileError("overlap", f"data from {b.t0_ns} ns, the stream was already "
                                f"published up to {end} ns")
            if b.t0_ns > end + half:
                seq += 1  # a gap, as on the wire
        k = frames_per_block(b, cfg.frame_samples)
        seqs.append(seq)
        seq += k
        n += k
        end = b.end_ns
    last = frames_per_block(blocks[-1], cfg.frame_samples) if blocks else 0
    return Plan(tuple(seqs), dtype, scale, n, last)


def frames(blocks: Sequence[Block], p: Plan, cfg: DasInput | DtsInput,
           start: int = 0) -> Iterator[bytes]:
    """The file's frames from frame index `start` on (0-based across its blocks)."""
    i = 0
    fs = cfg.frame_samples
    for b, seq0 in zip(blocks, p.seqs, strict=True):
        kind = wire.StreamKind.from_label(b.kind)
        n = b.data.shape[0]
        k = frames_per_block(b, fs)
        if i + k <= start:
            i += k
            continue
        for j in range(max(0, start - i), k):
            rows = b.data[j * fs:min(n, (j + 1) * fs)]
            t0 = b.t0_ns + round(j * fs * 1e9 / b.sample_rate)
            yield _encode(kind, seq0 + j, t0, b, rows, p)
        i += k


def _encode(kind: wire.StreamKind, seq: int, t0: int, b: Block, rows: np.ndarray,
            p: Plan) -> bytes:
    if p.dtype is wire.DType.INT16 and b.integer:
        # raw counts go out as they are: physical = raw * scale
        data = rows.astype(np.float32) * np.float32(p.scale)
    else:
        data = rows
    return wire.encode(kind, seq, t0, b.sample_rate, b.first_channel, data,
                       dtype=p.dtype, scale=p.scale)


def frame_end_ns(frame: bytes) -> int:
    """The time just after a (well-formed, our own) frame's last sample."""
    head = wire.HEADER.unpack_from(frame, 0)
    t0_ns, rate, n_samples = head[6], head[7], head[10]
    return int(t0_ns + round(n_samples * 1e9 / rate))
