"""LOW ``drift`` alerts from the gateways' model-health points (`cloud.model_health`).

A point past any limit of the ``[alerting]`` table (``drift_psi``, ``drift_saturation_rate``,
``drift_out_of_range_rate``, ``drift_fallback_rate``) becomes a synthetic event of kind
``drift`` and severity ``low`` whose id names the gateway, stream and model version: one
alert per model version and stream on a gateway (de-duplicated like any event), which an
operator acknowledges or resolves; rules select it with ``kinds = ["drift"]``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from cloud import model_health, schema
from cloud.alerting.feed import RowsClient
from firmware_configs.alerting import AlertingSection

_NAMESPACE = uuid.UUID("1c0f5f0e-3d52-4a8e-9b8e-7d0c6f1a2b3c")


def limits(a: AlertingSection) -> dict[str, float]:
    return {"score_psi": a.drift_psi, "saturation_rate": a.drift_saturation_rate,
            "out_of_range_rate": a.drift_out_of_range_rate,
            "fallback_rate": a.drift_fallback_rate}


def drift_event(point: dict[str, Any], over: dict[str, float]) -> dict[str, Any]:
    """The synthetic event for a model-health point past its limits (`over`: figure ->
    value)."""
    key = f"{point['site']}/{point['gateway']}/{point['stream']}/{point['model_version']}"
    t = int(point["time_ns"])
    return {"id": str(uuid.uuid5(_NAMESPACE, key)), "site": point["site"],
            "gateway": point["gateway"], "stream": point["stream"], "severity": "low",
            "class_hint": "drift", "kind": "drift", "start_ns": t, "end_ns": t,
            "received_ns": t, "model_version": point["model_version"],
            "peak_score": float(point.get("score_psi") or 0.0),
            "drift": {k: round(v, 6) for k, v in over.items()}}


class DriftFeed:
    """Model-health points past the limits since the last poll, as drift events."""

    def __init__(self, client: RowsClient, section: AlertingSection, *, db: str = schema.DB,
                 start_ns: int | None = None) -> None:
        self.client, self.db, self.limits = client, db, limits(section)
        self.cursor_ns = start_ns if start_ns is not None else \
            time.time_ns() - int(section.lookback_s * 1e9)

    def poll(self) -> list[dict[str, Any]]:
        points = model_health.query(self.client, self.db, site=None, gateway=None,
                                    start_ns=self.cursor_ns + 1, end_ns=time.time_ns() + 10**9)
        out = []
        for p in points:
            self.cursor_ns = max(self.cursor_ns, p["time_ns"])
            over = {k: float(p[k]) for k, lim in self.limits.items()
                    if p.get(k) is not None and float(p[k]) > lim}
            if over:
                out.append(drift_event(p, over))
        return out
