"""Gateways: last heartbeat, status, model, throughput, backlog, drops and latency (all
frames and per stream)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from cloud.api.deps import StoreDep, needs
from cloud.api.schemas import Fleet

router = APIRouter(tags=["fleet"])


@router.get("/fleet", response_model=Fleet, **needs("viewer"))
def get_fleet(store: StoreDep) -> dict[str, Any]:
    return {"items": store.fleet(), "now_ns": time.time_ns()}
