"""Times in query strings: RFC 3339, integer nanoseconds since the epoch, or relative to now.

>>> parse_time("2026-01-02T03:04:05Z", now_ns=0)
1767323045000000000
>>> parse_time("1767323045000000000", now_ns=0)
1767323045000000000
>>> parse_time("now-90s", now_ns=100_000_000_000)
10000000000
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_RELATIVE = re.compile(r"^now(?:-(\d+(?:\.\d+)?)(ms|s|m|h|d))?$")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
_FRACTION = re.compile(r"\.(\d+)")


def parse_time(text: str, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch; ValueError with a reason on anything else."""
    text = text.strip()
    if re.fullmatch(r"\d{1,19}", text):
        return int(text)
    rel = _RELATIVE.match(text)
    if rel:
        now = time.time_ns() if now_ns is None else now_ns
        amount, unit = rel.groups()
        return now - (round(float(amount) * _UNIT_NS[unit]) if amount else 0)
    return _parse_rfc3339(text)


def _parse_rfc3339(text: str) -> int:
    # datetime keeps microseconds: split off the fraction to keep nanoseconds
    frac = _FRACTION.search(text)
    digits = frac.group(1) if frac else ""
    base = text[: frac.start()] + text[frac.end():] if frac else text
    try:
        dt = datetime.fromisoformat(base.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use RFC 3339 (2026-01-02T03:04:05Z), "
            "nanoseconds since the epoch, or now-15m"
        ) from None
    if dt.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z or an offset like +00:00")
    seconds = int(dt.astimezone(UTC).timestamp())
    return seconds * 10**9 + int((digits + "000000000")[:9])


def format_time(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, e.g. 2026-01-02T03:04:05.000000001Z."""
    seconds, rest = divmod(ns, 10**9)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest:09d}Z"
