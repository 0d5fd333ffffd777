"""The gateways' model-health figures (`edge_agent.model_health`) in InfluxDB.

A health heartbeat's optional ``model_health`` ({stream: [{model_version, windows, rows,
score_psi, saturation_rate, out_of_range_rate, fallback_rate}, ...]}) becomes one
``model_health`` point per stream and model version in the history tier, tagged site,
gateway, stream and model_version, at the heartbeat's time. `valid` decides what is taken
(hostile input: anything else is rejected with the heartbeat's other bad keys).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cloud import codec

MEASUREMENT = "model_health"
RATES = ("score_psi", "saturation_rate", "out_of_range_rate", "fallback_rate")
COUNTS = ("windows", "rows")
MAX_VERSIONS = 8  # per stream and heartbeat


def _num_or_null(v: object) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool)
                         and math.isfinite(v) and v >= 0)


def _entry_ok(e: object) -> bool:
    if not isinstance(e, dict):
        return False
    mv = e.get("model_version")
    if not isinstance(mv, str) or not 0 < len(mv) <= 256:
        return False
    if not all(isinstance(e.get(k), int) and not isinstance(e.get(k), bool) and e[k] >= 0
               for k in COUNTS):
        return False
    return all(_num_or_null(e.get(k)) for k in RATES)


def valid(v: object) -> bool:
    """Whether a heartbeat's ``model_health`` value has the documented shape."""
    return isinstance(v, dict) and all(
        k in ("das", "dts") and isinstance(entries, list) and len(entries) <= MAX_VERSIONS
        and all(_entry_ok(e) for e in entries) for k, entries in v.items())


def lines(d: Mapping[str, Any]) -> list[str]:
    """The ``model_health`` points of one (validated) heartbeat; [] without the key."""
    out = []
    for stream, entries in (d.get("model_health") or {}).items():
        for e in entries:
            tags = {"site": d["site"], "gateway": d["gateway"], "stream": stream,
                    "model_version": e["model_version"]}
            fields: dict[str, Any] = {k: int(e[k]) for k in COUNTS}
            fields.update({k: float(e[k]) for k in RATES if e.get(k) is not None})
            out.append(codec.line(MEASUREMENT, tags, fields, int(d["t_ns"])))
    return out


def query(client: Any, db: str, *, site: str | None, gateway: str | None, start_ns: int,
          end_ns: int, limit: int = 5000) -> list[dict[str, Any]]:
    """Stored points, oldest first: time_ns, site, gateway, stream, model_version, figures."""
    from cloud import schema
    from cloud.influx import InfluxError, quote_ident, quote_literal

    conds = [f"time >= {int(start_ns)}", f"time <= {int(end_ns)}"]
    conds += [f"{quote_ident(k)} = {quote_literal(v)}" for k, v in
              (("site", site), ("gateway", gateway)) if v is not None]
    target = ".".join(quote_ident(x) for x in (db, schema.RP_HISTORY, MEASUREMENT))
    q = (f"SELECT * FROM {target} WHERE {' AND '.join(conds)} "  # noqa: S608 - quoted above
         f"ORDER BY time ASC LIMIT {int(limit)}")
    try:
        rows = client.rows(q, db=db)
    except InfluxError as exc:
        if not exc.retryable and "not found" in str(exc):
            return []
        raise
    keep = ("site", "gateway", "stream", "model_version", *COUNTS, *RATES)
    return [{"time_ns": int(r["time"]), **{k: r.get(k) for k in keep}} for r in rows]
