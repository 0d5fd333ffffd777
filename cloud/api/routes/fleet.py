"""Gateways: last heartbeat, status, model, throughput, backlog, drops and latency."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from cloud.api.deps import StoreDep, needs
from cloud.api.schemas import Items

router = APIRouter(tags=["fleet"])


@router.get("/fleet", response_model=Items, **needs("viewer"))
def get_fleet(store: StoreDep) -> dict[str, Any]:
    return {"items": store.fleet(), "now_ns": time.time_ns()}
