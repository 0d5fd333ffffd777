"""Waiting on real processes in integration tests: poll a check until a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(check: Callable[[], object], timeout: float, what: str,
             interval: float = 0.05) -> None:
    """Return once ``check()`` is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)
