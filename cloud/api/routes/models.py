"""The model registry: versions and rollout state, history, promotion and rollback (admin)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException

from cloud.api.deps import CurrentUser, RegistryDep, needs
from cloud.api.schemas import Models, PromoteIn, RollbackIn

router = APIRouter(tags=["models"])
log = logging.getLogger(__name__)


@router.get("/models", response_model=Models, **needs("viewer"))
def list_models(registry: RegistryDep) -> dict[str, Any]:
    production = registry.production()
    return {"items": [r.to_dict() for r in registry.list()],
            "production": production.version if production else None}


@router.get("/models/history", **needs("viewer"))
def model_history(registry: RegistryDep) -> dict[str, Any]:
    """Every state change: time, version, from, to, reason, actor."""
    return {"items": registry.history()}


@router.post("/models/{version}/promote", **needs("admin"))
def promote(version: str, body: PromoteIn, registry: RegistryDep,
            user: CurrentUser) -> dict[str, Any]:
    """Move a version to another state (409 with the reason if the transition is illegal)."""
    try:
        record = registry.promote(version, to=body.to, reason=body.reason, actor=user.name)
    except KeyError:
        raise HTTPException(404, f"no model version {version!r}") from None
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    log.info("model promoted version=%s to=%s actor=%s", version, body.to, user.name)
    return record.to_dict()


@router.post("/models/rollback", **needs("admin"))
def rollback(body: RollbackIn, registry: RegistryDep, user: CurrentUser) -> dict[str, Any]:
    """Put the previous production model back in production."""
    try:
        record = registry.rollback(reason=body.reason, actor=user.name)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    log.info("model rollback version=%s actor=%s", record.version, user.name)
    return record.to_dict()
