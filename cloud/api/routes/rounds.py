"""Federated-learning rounds: participants, failures, loss/AUC, bytes and duration."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from cloud.api.deps import StoreDep, needs
from cloud.api.schemas import Items

router = APIRouter(tags=["federation"])


@router.get("/rounds", response_model=Items, **needs("viewer"))
def get_rounds(
    store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    return {"items": store.rounds(limit=limit), "now_ns": time.time_ns()}
