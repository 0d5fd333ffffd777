"""Open liveness (`/health`: InfluxDB and ingestion freshness) and `/me` (who the token is)."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cloud.api.deps import CurrentUser, SettingsDep, StoreDep, needs
from cloud.api.schemas import Health, Me
from cloud.influx import InfluxError

open_router = APIRouter(tags=["health"])
router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


def _ingestion(store: StoreDep, stale_after_s: float) -> tuple[str, float | None]:
    seen = [g["last_seen_ns"] for g in store.fleet() if g.get("last_seen_ns")]
    if not seen:
        return "no data", None
    age = max(0.0, (time.time_ns() - max(seen)) / 1e9)
    return ("ok" if age <= stale_after_s else "stale"), round(age, 3)


@open_router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(request: Request, store: StoreDep, settings: SettingsDep) -> Any:
    """Open (no token): 200 when InfluxDB answers, else 503; ingestion = newest heartbeat age;
    dead_letters = what ingestion could never store."""
    try:
        influx_ok = bool(store.ping())
    except InfluxError:
        influx_ok = False
    ingestion, age, dead = "unknown", None, None
    if influx_ok:
        try:
            ingestion, age = _ingestion(store, settings.stale_after_s)
            dead = sum(int(r.get("dead_letters") or 0) for r in store.ingest_status())
        except InfluxError as exc:
            log.warning("health fleet query failed error=%r", str(exc))
    body = {
        "status": "ok" if influx_ok and ingestion == "ok" else "degraded",
        "influx": "ok" if influx_ok else "unreachable",
        "ingestion": ingestion,
        "last_data_age_s": age,
        "registry": "ok" if request.app.state.registry is not None else "not configured",
        "dead_letters": dead,
    }
    return JSONResponse(body, status_code=200 if influx_ok else 503)


@router.get("/me", response_model=Me, **needs("viewer"))
def me(user: CurrentUser) -> dict[str, Any]:
    """The name and role behind the token (the dashboard uses it to show or hide actions)."""
    return {"name": user.name, "role": user.role}
