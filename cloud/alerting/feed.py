# ruff: noqa: S608 - InfluxQL here is built from quote_ident and int() only
"""The alerting feed: events ingestion stored in InfluxDB, read by arrival time.

Each poll reads the events received since the last one (``received_ns``, set by ingestion)
minus a margin, so an event written a little out of order is not missed; the `Alerter` is
idempotent, so re-reading the margin costs a few rows and changes nothing. Only events
that started within ``lookback_s`` are read (a gateway's outbox replaying an old event
after an outage is still within it for a day by default).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from cloud import schema
from cloud.influx import InfluxError, quote_ident
from cloud.store import _dedupe, _event

log = logging.getLogger(__name__)
MARGIN_NS = 30 * 1_000_000_000


class RowsClient(Protocol):
    def rows(self, q: str, db: str | None = None) -> list[dict[str, Any]]: ...


class EventFeed:
    """New (or changed) stored events, oldest arrival first, per `poll()`."""

    def __init__(self, client: RowsClient, *, db: str = schema.DB, lookback_s: float = 86400,
                 start_ns: int = 0) -> None:
        self.client, self.db, self.lookback_s = client, db, lookback_s
        self.cursor_ns = start_ns  # newest received_ns seen

    def poll(self) -> list[dict[str, Any]]:
        """Events with ``received_ns`` after the cursor minus the margin; [] before the
        database exists. Raises `InfluxError` when InfluxDB fails (retry later)."""
        target = ".".join(quote_ident(x) for x in (self.db, schema.RP_EVENTS, schema.EVENT))
        since = max(0, self.cursor_ns - MARGIN_NS)
        q = (f"SELECT * FROM {target} WHERE time > now() - {int(self.lookback_s)}s "
             f"AND \"received_ns\" > {int(since)}")
        try:
            rows = self.client.rows(q, db=self.db)
        except InfluxError as exc:
            if not exc.retryable and "not found" in str(exc):
                return []
            raise
        events = _dedupe([_with_extras(_event(r), r) for r in rows])
        events.sort(key=lambda e: e.get("received_ns") or 0)
        if events:
            self.cursor_ns = max(self.cursor_ns, max(e.get("received_ns") or 0 for e in events))
        return events


def _with_extras(e: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """Fields a newer event schema may carry (kind, its confidence, merged_into)."""
    for key in ("kind", "kind_confidence", "merged_into"):
        if row.get(key) not in (None, ""):
            e[key] = row[key]
    return e
