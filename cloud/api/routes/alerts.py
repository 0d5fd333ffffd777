"""Alerts: list, acknowledge, resolve, the audit trail and delivery figures.

The alert state is the SQLite file of the alerting config (``alerting_config`` setting or
``fiberwatch cloud serve --alerting FILE``), shared with ``fiberwatch cloud alerting``,
which fires and delivers; acknowledging or resolving here is recorded in the audit trail
with the caller's token name and queued for the alert's receivers.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import CurrentUser, SettingsDep, needs
from cloud.settings import CloudSettings

router = APIRouter(tags=["alerts"])
_lock = threading.Lock()
EventId = Annotated[str, Path(min_length=1, max_length=256)]


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=2000)


def _alerter(request: Request, settings: CloudSettings) -> Any:
    """The `Alerter` over the shared state file, opened on first use."""
    with _lock:
        alerter = getattr(request.app.state, "alerter", None)
        if alerter is None:
            if settings.alerting_config is None:
                raise HTTPException(503, "alerting is not configured (--alerting FILE or "
                                         "FIBERWATCH_CLOUD_ALERTING_CONFIG)")
            from cloud.alerting.engine import Alerter
            from cloud.alerting.service import load_config
            from cloud.alerting.state import AlertState

            config = load_config(settings.alerting_config)
            alerter = Alerter(config, AlertState(config.alerting.state_db))
            request.app.state.alerter = alerter
        return alerter


def get_alerter(request: Request, settings: SettingsDep) -> Any:
    return _alerter(request, settings)


def maybe_alerter(request: Request, settings: SettingsDep) -> Any:
    """The `Alerter`, or None when alerting is not configured (lists are then empty)."""
    return None if settings.alerting_config is None else _alerter(request, settings)


AlerterDep = Annotated[Any, Depends(get_alerter)]
MaybeAlerterDep = Annotated[Any, Depends(maybe_alerter)]


@router.get("/alerts", **needs("viewer"))
def list_alerts(
    alerter: MaybeAlerterDep,
    status: Literal["firing", "acknowledged", "resolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Alerts, most recently changed first, and what is still queued per receiver;
    ``configured`` is false (and the lists empty) when the API has no alerting config."""
    if alerter is None:
        return {"items": [], "queued": {}, "configured": False}
    return {"items": alerter.state.alerts(status=status, limit=limit),
            "queued": alerter.state.queue_depth(), "configured": True}


@router.get("/alerts/audit", **needs("viewer"))
def audit(
    alerter: MaybeAlerterDep,
    event_id: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Who did what to which alert (fire, severity_changed, acknowledge, resolve), newest
    first."""
    if alerter is None:
        return {"items": [], "configured": False}
    return {"items": alerter.state.audit(event_id=event_id, limit=limit), "configured": True}


@router.get("/alerts/deliveries", **needs("viewer"))
def deliveries(alerter: AlerterDep,
               limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> dict[str, Any]:
    """Recent deliveries and the latency from event arrival to delivery (ms)."""
    rows = alerter.state.deliveries(limit)
    lat = sorted((r["delivered_ns"] - r["event_ns"]) / 1e6 for r in rows
                 if r["status"] == "firing")
    pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1)) if lat else None
    return {"items": rows, "latency_ms": {"n": len(lat), "p50": pick(0.5) if pick else None,
                                          "p99": pick(0.99) if pick else None}}


def _transition(alerter: Any, event_id: str, to: str, user: Any, note: str) -> dict[str, Any]:
    from cloud.alerting.state import AlertConflict, AlertNotFound

    try:
        return alerter.transition(event_id, to, actor=user.name, note=note)
    except AlertNotFound:
        raise HTTPException(404, f"no alert for event {event_id!r}") from None
    except AlertConflict as exc:
        raise HTTPException(409, str(exc)) from None


@router.post("/alerts/{event_id}/ack", **needs("operator"))
def acknowledge(event_id: EventId, alerter: AlerterDep, user: CurrentUser,
                body: TransitionIn | None = None) -> dict[str, Any]:
    """Acknowledge a firing alert (operator or admin); 409 if it is not firing."""
    return _transition(alerter, event_id, "acknowledged", user, body.note if body else "")


@router.post("/alerts/{event_id}/resolve", **needs("operator"))
def resolve(event_id: EventId, alerter: AlerterDep, user: CurrentUser,
            body: TransitionIn | None = None) -> dict[str, Any]:
    """Resolve an alert (operator or admin); its receivers get a 'resolved' notification."""
    return _transition(alerter, event_id, "resolved", user, body.note if body else "")
