"""A small on-disk spool of the QoS0 messages (feature summaries) not yet written.

QoS1 messages need none: they are acknowledged only once stored, so the broker keeps them.
A QoS0 summary is the broker's to forget as soon as it is sent, so ingestion appends each
one here before it enters the in-memory buffer, and the writer commits the spool position
of every batch it stored. After a SIGKILL, the next run replays what was received but not
committed. Appends are unbuffered ``write()`` calls: the data is in the kernel's page cache
when ``on_message`` returns, which a killed process cannot lose (a power cut can).

Layout: segments ``spool-<n>.bin`` of records ``<u32 length><u64 received_ns><u16 topic
length><topic><payload>``, a new segment past `segment_bytes`; ``commit`` holds the
``<n> <offset>`` after the last stored record. Segments wholly before the commit are
deleted; past `max_bytes` the oldest segment is dropped (its messages counted as lost).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
_HEAD = struct.Struct("<IQH")
Position = tuple[int, int]  # (segment, offset just past the record)


class Spool:
    """Append (the MQTT thread), commit (the writer thread), replay (at start)."""

    def __init__(self, directory: Path, *, max_bytes: int = 256 << 20,
                 segment_bytes: int = 16 << 20) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.segment_bytes = max_bytes, segment_bytes
        self.dropped = 0  # records lost to the byte bound
        self._lock = threading.Lock()
        self._commit = self._read_commit()
        segs = self._segments()
        self._seg = max(segs[-1] if segs else 0, self._commit[0]) + 1  # never append to old
        self._fd = -1
        self._size = 0
        self._open(self._seg)

    def _segments(self) -> list[int]:
        out = []
        for p in self.directory.glob("spool-*.bin"):
            try:
                out.append(int(p.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return sorted(out)

    def _path(self, n: int) -> Path:
        return self.directory / f"spool-{n}.bin"

    def _open(self, n: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self._path(n), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._seg, self._size = n, 0

    def _read_commit(self) -> Position:
        try:
            seg, off = (self.directory / "commit").read_text().split()
            return int(seg), int(off)
        except (OSError, ValueError):
            return 0, 0

    def append(self, topic: str, payload: bytes, received_ns: int) -> Position:
        """Spool one message; returns the position to `commit` once it is stored."""
        t = topic.encode()
        record = _HEAD.pack(len(t) + len(payload), received_ns, len(t)) + t + payload
        with self._lock:
            if self._size and self._size + len(record) > self.segment_bytes:
                self._open(self._seg + 1)
                self._bound()
            os.write(self._fd, record)
            self._size += len(record)
            return self._seg, self._size

    def commit(self, pos: Position) -> None:
        """Everything up to `pos` is stored: remember it, delete finished segments."""
        with self._lock:
            if pos <= self._commit:
                return
            self._commit = pos
            tmp = self.directory / "commit.tmp"
            tmp.write_text(f"{pos[0]} {pos[1]}")
            tmp.replace(self.directory / "commit")
            for n in self._segments():
                if n < pos[0]:
                    self._path(n).unlink(missing_ok=True)

    def _bound(self) -> None:
        """Drop the oldest segments while the spool is over `max_bytes` (lock held)."""
        segs = self._segments()
        total = sum(self._path(n).stat().st_size for n in segs)
        for n in segs[:-1]:
            if total <= self.max_bytes:
                break
            size = self._path(n).stat().st_size
            self.dropped += sum(1 for _ in _records(self._path(n), 0))
            self._path(n).unlink(missing_ok=True)
            total -= size
            log.warning("event=spool_full dropped_segment=%d bytes=%d", n, size)

    def replay(self) -> Iterator[tuple[str, bytes, int, Position]]:
        """(topic, payload, received_ns, position) of every record after the commit."""
        cseg, coff = self._commit
        for n in self._segments():
            if n < cseg or n == self._seg:
                continue
            for topic, payload, received_ns, end in _records(self._path(n),
                                                              coff if n == cseg else 0):
                yield topic, payload, received_ns, (n, end)

    def close(self) -> None:
        """Close; an empty or fully committed current segment is removed."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                if self._size == 0 or self._commit == (self._seg, self._size):
                    self._path(self._seg).unlink(missing_ok=True)


def _records(path: Path, start: int) -> Iterator[tuple[str, bytes, int, int]]:
    """Records of one segment from byte `start`; stops at a torn (partly written) tail."""
    try:
        data = path.read_bytes()
    except OSError:
        return
    off = start
    while off + _HEAD.size <= len(data):
        length, received_ns, tlen = _HEAD.unpack_from(data, off)
        body = off + _HEAD.size
        if body + length > len(data) or tlen > length:
            return
        topic = data[body:body + tlen].decode("utf-8", "replace")
        yield topic, data[body + tlen:body + length], received_ns, body + length
        off = body + length
