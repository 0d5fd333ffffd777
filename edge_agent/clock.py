"""The gateway's wall clock, with one test hook for clock-jump tests.

`wall_ns` is `time.time_ns` unless the environment sets the **test hook**
``FIBERWATCH_TEST_CLOCK_OFFSET_FILE``: the path of a text file holding a number of seconds
(e.g. ``-86400``) added to the wall clock, re-read at most every 0.2 s, so a test can make a
running agent's clock jump as an NTP step or a bad RTC would. It exists only for tests and
`fiberwatch.bench._chaos_edge`; shipped configs and units never set it. A missing or
unreadable file means no offset. Durations never use this clock (they use `time.monotonic`).
"""

from __future__ import annotations

import math
import os
import time

ENV_OFFSET_FILE = "FIBERWATCH_TEST_CLOCK_OFFSET_FILE"
_REREAD_S = 0.2


class _OffsetFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self.offset_ns = 0
        self._next_read = 0.0

    def get(self) -> int:
        now = time.monotonic()
        if now >= self._next_read:
            self._next_read = now + _REREAD_S
            self.offset_ns = _read_offset_ns(self.path)
        return self.offset_ns


def _read_offset_ns(path: str) -> int:
    try:
        with open(path, encoding="ascii") as f:
            v = float(f.read().strip() or 0)
    except (OSError, ValueError, UnicodeDecodeError):
        return 0
    return round(v * 1e9) if math.isfinite(v) and abs(v) < 1e10 else 0


_hook = _OffsetFile(os.environ[ENV_OFFSET_FILE]) if os.environ.get(ENV_OFFSET_FILE) else None


def wall_ns() -> int:
    """The gateway's wall clock, ns since the epoch (plus the test hook's offset, if set)."""
    if _hook is None:
        return time.time_ns()
    return time.time_ns() + _hook.get()
