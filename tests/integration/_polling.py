"""Waiting on real processes in integration tests: poll a check until a deadline.

The one polling loop is `federation.processes.wait_until` (the product's own); here it fails
the test with an AssertionError instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from federation.processes import wait_until


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05, *,
             failed: Callable[[], str | None] | None = None) -> Any:
    """Return ``check()``'s first truthy value; fail the test after ``timeout`` seconds, or as
    soon as ``failed()`` returns a reason (a process died)."""
    return wait_until(check, timeout, f"waiting for {what}", failed=failed,
                      max_interval=interval, error=AssertionError)
