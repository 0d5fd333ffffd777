"""Which files in the watched directory are the interrogator's, and which are complete.

A name matches a stream by its glob patterns; hidden names (``.x``), temporary ones
(``*.part``, ``*.tmp``, ``*.partial``) and marker files are never data. A file is complete
when its companion marker exists (``marker_suffix``), else when its size and mtime have not
changed for ``settle_s`` seconds of this process's clock and no process has it open for
writing. The last is asked of the kernel with a read lease (``F_SETLEASE``), which fails
while a writer holds the file open; the kernel grants leases only to the file's owner (or
with ``CAP_LEASE``), so for others' files the bridge relies on the settle time alone. A file
that still cannot be read once complete is retried (an HDF5 file whose writer has not closed
it fails to open) until ``incomplete_timeout_s`` after its last change, unless the kernel
confirmed it closed: then it is refused at once.

Files of a stream are taken in name order: an incomplete file holds back the later ones of
its stream (their data would come before its own), until it completes or, with a marker
suffix, until ``incomplete_timeout_s`` passes without a marker (then it is refused).
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.bridge.config import BridgeConfig, DasInput, DtsInput

TEMPORARY = ("*.part", "*.tmp", "*.partial", "*.lock")


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    changed: float  # monotonic time the size or mtime last changed


@dataclass(frozen=True, slots=True)
class Candidate:
    path: Path
    stream: str
    size: int
    mtime_ns: int
    quiet_s: float  # seconds since its last change
    complete: bool = True
    closed: bool = False  # the kernel confirmed that no process has it open for writing


class Watcher:
    """Scans the directory; remembers sizes between scans to tell when files settle."""

    def __init__(self, cfg: BridgeConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.dir = cfg.bridge.watch_dir
        self.clock = clock
        self._seen: dict[str, _Seen] = {}
        if threading.current_thread() is threading.main_thread():
            # a lease break is signalled with SIGIO, whose default action ends the process
            signal.signal(signal.SIGIO, signal.SIG_IGN)
            self._leases = True
        else:
            self._leases = signal.getsignal(signal.SIGIO) == signal.SIG_IGN

    def stream_of(self, name: str) -> DasInput | DtsInput | None:
        marker = self.cfg.bridge.marker_suffix
        if name.startswith(".") or any(fnmatch.fnmatch(name, p) for p in TEMPORARY):
            return None
        if marker and name.endswith(marker):
            return None
        for inp in self.cfg.inputs():
            if any(fnmatch.fnmatch(name, p) for p in inp.patterns):
                return inp
        return None

    def scan(self, skip: set[str]) -> list[Candidate]:
        """Data files not in `skip`, complete or not, in name order (interrogators name
        their files by time)."""
        now = self.clock()
        out = []
        try:
            entries = sorted(os.scandir(self.dir), key=lambda e: e.name)
        except OSError:
            return []
        for e in entries:
            if e.name in skip:
                continue
            inp = self.stream_of(e.name)
            if inp is None:
                continue
            try:
                st = e.stat()
            except OSError:
                continue  # removed meanwhile
            if not e.is_file():
                continue
            seen = self._seen.get(e.name)
            if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._seen[e.name] = seen = _Seen(st.st_size, st.st_mtime_ns, now)
            kind = "das" if isinstance(inp, DasInput) else "dts"
            cand = Candidate(Path(e.path), kind, st.st_size, st.st_mtime_ns, now - seen.changed)
            out.append(self._judge(cand))
        return out

    def _judge(self, c: Candidate) -> Candidate:
        """`c` with `complete` and `closed` set (see the module doc)."""
        writing = open_for_writing(c.path) if self._leases else None
        marker = self.cfg.bridge.marker_suffix
        if marker:
            complete = Path(f"{c.path}{marker}").exists()
        else:
            complete = c.quiet_s >= self.cfg.bridge.settle_s and writing is not True
        return Candidate(c.path, c.stream, c.size, c.mtime_ns, c.quiet_s, complete,
                         closed=writing is False)

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)


def open_for_writing(path: Path) -> bool | None:
    """Whether a process holds `path` open for writing; None when the kernel will not say
    (not the file's owner, no ``CAP_LEASE``, or a file system without leases)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)
