"""Request and response bodies (the parts of the OpenAPI document that the API owns).

Events, fleet rows, rounds and model records are passed through as the Store and the Registry
return them (`edge_agent.events.Event` fields plus ``received_ns`` and ``labels`` for events).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from edge_agent import topics

Name = Annotated[str, AfterValidator(lambda v: topics.check_name(v, "name"))]
Stream = Literal["das", "dts"]
WindowField = Literal["score", "energy", "threshold"]
LabelKind = Literal["confirmed", "false_alarm", "note"]
ModelState = Literal["candidate", "canary", "production", "retired"]


class Page(BaseModel):
    items: list[dict[str, Any]]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page, null on the last one")


class Items(BaseModel):
    items: list[dict[str, Any]]
    now_ns: int = Field(description="server time, for ages without clock skew")


class Window(BaseModel):
    times_ns: list[int]
    ch_start: int
    ch_end: int
    group_size: int
    channels: list[int] = Field(description="first channel of each row of values")
    values: list[list[float | None]] = Field(
        description="per channel group, per time; null = no data")
    field: str
    resolution_s: float
    source: str | None = Field(None, description="storage tier read (raw or history)")


class AnomalyDetail(BaseModel):
    event: dict[str, Any]
    waterfall: Window | None
    waterfall_error: str | None = None


class LabelIn(BaseModel):
    label: LabelKind
    note: str = Field("", max_length=2000)


class PromoteIn(BaseModel):
    to: ModelState
    reason: str = Field("", max_length=500)


class RollbackIn(BaseModel):
    reason: str = Field("", max_length=500)


class Models(BaseModel):
    items: list[dict[str, Any]]
    production: str | None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    influx: Literal["ok", "unreachable"]
    ingestion: Literal["ok", "stale", "no data", "unknown"]
    last_data_age_s: float | None
    registry: Literal["ok", "not configured"]


class Me(BaseModel):
    name: str
    role: str
