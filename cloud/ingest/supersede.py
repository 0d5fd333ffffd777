# ruff: noqa: S608 - InfluxQL here is built from quote_ident/quote_literal/int() only
"""One point per event: a re-sent event whose tags or start changed replaces its old point.

A gateway announces an event while it is open and sends it again as it grows and when it
closes; its severity, class hint or model version (tags) or its start (the point's time)
may change on the way. Same id, other series or time: InfluxDB would keep both points. The
writer notes the series and time of each event's last written version (`Versions`, bounded)
and, once the new version is written, deletes the old point (`delete_statement`).
"""

from __future__ import annotations

from collections import OrderedDict

from cloud import codec, schema
from cloud.influx import quote_ident, quote_literal
from edge_agent.events import Event

Version = tuple[tuple[tuple[str, str], ...], int]  # (series tags, time)


def version(e: Event) -> Version:
    d = e.to_dict()
    return tuple((k, str(d[k])) for k in codec.EVENT_TAGS), int(e.start_ns)


class Versions:
    """The last written version of up to `max_events` events (least recently seen dropped:
    an event seen again after that many others were may leave its old point)."""

    def __init__(self, max_events: int = 100_000) -> None:
        self.max_events = max_events
        self._last: OrderedDict[str, Version] = OrderedDict()

    def replace(self, e: Event) -> Version | None:
        """Note `e` as written; the version it supersedes if that was another point."""
        new = version(e)
        old = self._last.pop(e.id, None)
        self._last[e.id] = new
        if len(self._last) > self.max_events:
            self._last.popitem(last=False)
        return old if old is not None and old != new else None


def delete_statement(old: Version) -> str:
    """DELETE of exactly the superseded point (its series, its time; run with db=...)."""
    tags, t = old
    conds = [f"{quote_ident(k)} = {quote_literal(v)}" for k, v in tags]
    conds.append(f"time >= {int(t)} AND time <= {int(t)}")
    return f"DELETE FROM {quote_ident(schema.EVENT)} WHERE {' AND '.join(conds)}"
