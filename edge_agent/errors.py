"""The typed error every refused input raises: a stable ``reason`` code and a ``detail``."""

from __future__ import annotations


class ReasonedError(ValueError):
    """Refused input. `reason` is a short stable code (usable as a counter label), `detail`
    says what was wrong; ``str()`` is ``"reason: detail"``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
