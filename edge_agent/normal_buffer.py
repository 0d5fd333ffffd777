"""Normal-window buffer: a bounded on-disk ring of normal feature rows for federated training.

The rows never leave the gateway. The agent appends; the Flower ClientApp, in another
process, reads with `NormalBuffer.open_readonly`. One file::

    [0, 4096)      header: magic b"FWNB", format, dim, max_rows, total (rows ever appended),
                   spec_hash (ASCII, 64 bytes)
    [4096, ...)    float32 ring, max_rows x dim; row i of the stream lives in slot i % max_rows
    [.., +12 x max_rows)  where each slot's row came from: window start ns (int64) and
                   channel (int32), 0 and -1 when unknown (`read_origin`); operator labels
                   drop rows by it (`edge_agent.labels`). A file written before this part
                   existed has no room for it: its rows read as of unknown origin.

Consistency across processes comes from ``flock`` on the file: an append holds it exclusive
while it writes the rows and then the header's ``total``; a read holds it shared. So a reader
always sees whole rows and a ``total`` that matches them. The writer never waits: if a reader
holds the lock, the rows are kept in memory (bounded by ``max_rows``) and written with the
next append. Appends are not fsynced (a process crash loses nothing, the page cache
survives it); `flush` and `close` fsync. Readers should open, read and close per use: if the
agent starts with another spec, dim or size it replaces the file (atomically, by rename).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"FWNB"
FORMAT = 1
HEADER_SIZE = 4096
_HEAD = struct.Struct("<4sIIQ64s")  # magic, format, dim, max_rows, spec_hash
_TOTAL = struct.Struct("<Q")
_TOTAL_AT = _HEAD.size
ORIGIN = np.dtype([("t_ns", "<i8"), ("channel", "<i4")])


class NormalBufferError(ValueError):
    """Not a normal buffer, or one for another feature spec."""


class NormalBuffer:
    """Bounded ring of float32 feature rows on disk, safe to read from another process.

    Parameters
    ----------
    path : Path
        Buffer file; created (with its folder) if missing, replaced if it was made for
        another ``dim``, ``spec_hash`` or ``max_rows``.
    dim : int
        Features per row.
    spec_hash : str
        `FeatureSpec.hash` of the rows.
    max_rows : int
        Capacity; the oldest rows are overwritten first.
    """

    def __init__(self, path: Path, *, dim: int, spec_hash: str, max_rows: int) -> None:
        if dim < 1 or max_rows < 1 or len(spec_hash.encode()) > 64:
            raise ValueError("dim and max_rows must be >= 1, spec_hash at most 64 bytes")
        self.path, self.dim, self.spec_hash, self.max_rows = Path(path), dim, spec_hash, max_rows
        self.readonly = False
        self.skipped_nonfinite = 0
        self.write_errors = 0  # writes the disk refused (rows kept in memory, retried)
        self._tlock = threading.Lock()
        self._pending: list[np.ndarray] = []
        self._origins: list[np.ndarray] = []  # where the pending rows came from
        self._fd = -1
        if self._existing_matches():
            self._fd = os.open(self.path, os.O_RDWR)
        else:
            self._create()

    @classmethod
    def open_readonly(cls, path: Path, *, spec_hash: str | None = None) -> NormalBuffer:
        """Open an existing buffer for reading (dim and spec come from the file).

        Parameters
        ----------
        path : Path
            Buffer file written by the agent.
        spec_hash : str, optional
            Refuse (`NormalBufferError`) a buffer written for another feature spec.
        """
        self = cls.__new__(cls)
        self.path, self.readonly, self.skipped_nonfinite = Path(path), True, 0
        self._tlock, self._pending, self._origins = threading.Lock(), [], []
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            with self._flock(fcntl.LOCK_SH):
                self.dim, self.max_rows, self.spec_hash = _read_head(self._fd, self.path)
        except NormalBufferError:
            os.close(self._fd)
            raise
        if spec_hash is not None and spec_hash != self.spec_hash:
            os.close(self._fd)
            raise NormalBufferError(f"{self.path}: rows are for feature spec "
                                    f"{self.spec_hash[:12]}, expected {spec_hash[:12]}")
        return self

    def append(self, rows: np.ndarray, t_ns: np.ndarray | None = None,
               channels: np.ndarray | None = None) -> None:
        """Append (N, dim) rows (non-finite rows are skipped and counted); never blocks.
        ``t_ns``/``channels`` (N,): each row's window start and channel, if known."""
        if self.readonly:
            raise NormalBufferError(f"{self.path}: opened read-only")
        x = np.asarray(rows, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"rows must be (N, {self.dim}), got shape {x.shape}")
        ok = np.asarray(np.isfinite(x).all(axis=1))
        self.skipped_nonfinite += int(len(ok) - ok.sum())
        origin = np.zeros(len(x), ORIGIN)
        origin["channel"] = -1
        if t_ns is not None and channels is not None:
            origin["t_ns"], origin["channel"] = t_ns, channels
        with self._tlock:
            self._pending.append(x[ok])
            self._origins.append(origin[ok])
            self._write_pending(blocking=False)

    def _write_pending(self, *, blocking: bool) -> None:
        x = np.concatenate(self._pending)[-self.max_rows:]
        o = np.concatenate(self._origins)[-self.max_rows:]
        self._pending, self._origins = [x], [o]
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return  # a reader holds it: write these with the next append
        try:
            total = self._total()
            self._write_ring(total, x, o)
            os.pwrite(self._fd, _TOTAL.pack(total + len(x)), _TOTAL_AT)
        except OSError as exc:  # e.g. ENOSPC: keep the rows (bounded) for the next append
            self.write_errors += 1
            if self.write_errors == 1 or self.write_errors % 1000 == 0:
                log.warning("event=normal_buffer_write_failed path=%s error=%s count=%d",
                            self.path, exc.strerror, self.write_errors)
            return
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._pending, self._origins = [], []

    def read(self, max_rows: int | None = None) -> np.ndarray:
        """Return up to ``max_rows`` of the most recent rows, oldest first, (n, dim) float32."""
        with self._tlock, self._flock(fcntl.LOCK_SH):
            total = self._total()
            n = min(total, self.max_rows, self.max_rows if max_rows is None else max_rows)
            out = np.empty((n, self.dim), np.float32)
            start = (total - n) % self.max_rows
            first = min(n, self.max_rows - start)
            self._read_into(out[:first], start)
            self._read_into(out[first:], 0)
        return out

    def read_origin(self, max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`read`, and where each row came from (`ORIGIN`: ``t_ns``, ``channel``)."""
        with self._tlock, self._flock(fcntl.LOCK_SH):
            total = self._total()
            n = min(total, self.max_rows, self.max_rows if max_rows is None else max_rows)
            out, org = np.empty((n, self.dim), np.float32), np.zeros(n, ORIGIN)
            org["channel"] = -1
            start = (total - n) % self.max_rows
            first = min(n, self.max_rows - start)
            self._read_into(out[:first], start)
            self._read_into(out[first:], 0)
            self._read_origin(org[:first], start)
            self._read_origin(org[first:], 0)
        return out, org

    def _read_origin(self, out: np.ndarray, slot: int) -> None:
        raw = os.pread(self._fd, out.nbytes, self._origin_offset(slot)) if len(out) else b""
        if len(raw) == out.nbytes and len(out):  # a file from before origins: unknown
            out[...] = np.frombuffer(raw, ORIGIN)

    def _origin_offset(self, slot: int) -> int:
        return self._row_offset(self.max_rows) + slot * ORIGIN.itemsize

    def __len__(self) -> int:
        with self._tlock, self._flock(fcntl.LOCK_SH):
            return min(self._total(), self.max_rows)

    @property
    def total(self) -> int:
        """Rows ever appended to this file (including overwritten ones)."""
        with self._tlock, self._flock(fcntl.LOCK_SH):
            return self._total()

    def flush(self) -> None:
        """fsync the file (the header and the rows)."""
        if not self.readonly:
            os.fsync(self._fd)

    def close(self) -> None:
        """Flush (writer) and close. Rows still held back by reader contention are written
        first, waiting for the lock if necessary."""
        if self._fd < 0:
            return
        with self._tlock:
            if not self.readonly and any(len(p) for p in self._pending):
                self._write_pending(blocking=True)
        self.flush()
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> NormalBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    @contextmanager
    def _flock(self, op: int) -> Iterator[None]:
        fcntl.flock(self._fd, op)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _total(self) -> int:
        return int(_TOTAL.unpack(os.pread(self._fd, _TOTAL.size, _TOTAL_AT))[0])

    def _row_offset(self, slot: int) -> int:
        return HEADER_SIZE + slot * self.dim * 4

    def _write_ring(self, total: int, x: np.ndarray, origin: np.ndarray) -> None:
        start = total % self.max_rows
        first = min(len(x), self.max_rows - start)
        os.pwrite(self._fd, x[:first].tobytes(), self._row_offset(start))
        os.pwrite(self._fd, origin[:first].tobytes(), self._origin_offset(start))
        if first < len(x):
            os.pwrite(self._fd, x[first:].tobytes(), self._row_offset(0))
            os.pwrite(self._fd, origin[first:].tobytes(), self._origin_offset(0))

    def _read_into(self, out: np.ndarray, slot: int) -> None:
        if len(out):
            raw = os.pread(self._fd, out.nbytes, self._row_offset(slot))
            out[...] = np.frombuffer(raw, np.float32).reshape(out.shape)

    def _existing_matches(self) -> bool:
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            dim, max_rows, spec = _read_head(fd, self.path)
        except NormalBufferError as exc:
            log.warning("normal buffer replaced path=%s reason=%s", self.path, exc)
            return False
        finally:
            os.close(fd)
        if (dim, max_rows, spec) != (self.dim, self.max_rows, self.spec_hash):
            log.warning("normal buffer replaced path=%s old_dim=%d old_rows=%d old_spec=%s",
                        self.path, dim, max_rows, spec[:12])
            return False
        return True

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        head = _HEAD.pack(MAGIC, FORMAT, self.dim, self.max_rows, self.spec_hash.encode())
        os.pwrite(fd, head + _TOTAL.pack(0), 0)
        os.ftruncate(fd, self._origin_offset(self.max_rows))
        os.fsync(fd)
        os.replace(tmp, self.path)
        self._fd = fd
        log.info("normal buffer created path=%s dim=%d max_rows=%d", self.path, self.dim,
                 self.max_rows)


def _read_head(fd: int, path: Path) -> tuple[int, int, str]:
    raw = os.pread(fd, _HEAD.size + _TOTAL.size, 0)
    if len(raw) < _HEAD.size + _TOTAL.size:
        raise NormalBufferError(f"{path}: too short for a normal buffer")
    magic, fmt, dim, max_rows, spec = _HEAD.unpack(raw[:_HEAD.size])
    if magic != MAGIC or fmt != FORMAT:
        raise NormalBufferError(f"{path}: not a normal buffer (magic {magic!r}, format {fmt})")
    if os.fstat(fd).st_size < HEADER_SIZE + max_rows * dim * 4:
        raise NormalBufferError(f"{path}: truncated")
    return int(dim), int(max_rows), spec.rstrip(b"\0").decode()
