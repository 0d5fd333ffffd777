"""Logging shared by every process of the project: one line format (structured key=value)
and a logger that repeats a line at a limited rate.

The lowest layer owns them so that the gateway, the simulator, the Flower processes, the
cloud ingestion and the CLI all write the same lines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

#: every process's log line: ``ts=... level=... logger=... msg=...``
LOG_FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"


def stderr_handler(level: int | str = logging.NOTSET) -> logging.Handler:
    """A stderr handler with `LOG_FORMAT`."""
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


class RateLimitedLog:
    """Log at most one line per ``key`` every ``interval_s``, saying how many were suppressed
    (``suppressed=N`` appended). Thread-safe.

    Examples
    --------
    >>> now = [0.0]
    >>> rl = RateLimitedLog(logging.getLogger("doc"), 10.0, clock=lambda: now[0])
    >>> rl.warning("k", "event=x"), rl.warning("k", "event=x")
    (True, False)
    >>> now[0] = 11.0
    >>> rl.warning("k", "event=x")  # logged with suppressed=1
    True
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval_s`` ago; True if
        the line was written."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] += 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        self._log.log(level, msg + " suppressed=%d", *args, suppressed, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        return self.log(logging.WARNING, key, msg, *args, exc_info=exc_info)

    def error(self, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        return self.log(logging.ERROR, key, msg, *args, exc_info=exc_info)
