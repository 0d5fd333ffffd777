"""Dead letters: what ingestion can never store, kept in bounded, rotated JSON-lines files.

One record per line: ``{"t_ns", "reason", "where", "bytes", "truncated", "data"}`` where
`where` is the retention policy of a line or the topic of a message, `bytes` its full size
and `data` at most `record_bytes` of it (UTF-8, undecodable bytes replaced). The current
file is ``dead-letter.jsonl``; when a record would push it past `file_bytes` it becomes
``dead-letter.jsonl.1`` (older ones shift up), and only `files` files are kept. So the
directory never holds more than about ``files * file_bytes`` bytes.

A write error (disk full, read-only) is counted and logged, never raised: dead letters are
the last resort and must not stall ingestion. `count` starts at the records already in the
files, so a restarted process goes on reporting them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from cloud.ingest.stats import RateLimitedLog

log = logging.getLogger(__name__)
NAME = "dead-letter.jsonl"


class DeadLetters:
    """Append records to ``directory/dead-letter.jsonl``, rotating it (thread-safe)."""

    def __init__(self, directory: Path, *, file_bytes: int = 8 << 20, files: int = 4,
                 record_bytes: int = 64 << 10) -> None:
        self.directory = Path(directory)
        self.file_bytes, self.files, self.record_bytes = file_bytes, files, record_bytes
        self.count = self._kept()  # records taken: those kept from earlier runs, then ours
        self.write_errors = 0
        self._lock = threading.Lock()
        self._limited = RateLimitedLog(log)

    @property
    def path(self) -> Path:
        return self.directory / NAME

    def _kept(self) -> int:
        """Records in the files already there (a restart keeps reporting them)."""
        n = 0
        for p in self.directory.glob(f"{NAME}*"):
            try:
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        n += chunk.count(b"\n")
            except OSError:
                continue
        return n

    def add(self, reason: str, where: str, data: str | bytes) -> None:
        """Keep (the head of) `data`, which was refused for `reason`."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        head = raw[: self.record_bytes].decode("utf-8", "replace")
        record = json.dumps({"t_ns": time.time_ns(), "reason": reason, "where": where,
                             "bytes": len(raw), "truncated": len(raw) > self.record_bytes,
                             "data": head}, ensure_ascii=True) + "\n"
        with self._lock:
            self.count += 1
            try:
                self._append(record.encode())
            except OSError as exc:
                self.write_errors += 1
                self._limited.log(logging.ERROR, "write", "event=dead_letter_write_failed "
                                  "dir=%s error=%r", self.directory, str(exc))
        self._limited.log(logging.WARNING, reason, "event=dead_letter reason=%s where=%s "
                          "bytes=%d total=%d", reason, where, len(raw), self.count)

    def _append(self, record: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(record) > self.file_bytes:
            self._rotate()
        with open(self.path, "ab") as f:
            f.write(record)

    def _rotate(self) -> None:
        oldest = self.directory / f"{NAME}.{self.files - 1}"
        if self.files == 1:
            self.path.unlink(missing_ok=True)
            return
        oldest.unlink(missing_ok=True)
        for k in range(self.files - 2, 0, -1):
            src = self.directory / f"{NAME}.{k}"
            if src.exists():
                src.rename(self.directory / f"{NAME}.{k + 1}")
        self.path.rename(self.directory / f"{NAME}.1")
