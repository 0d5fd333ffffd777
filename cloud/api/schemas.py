"""Request and response bodies (the parts of the OpenAPI document that the API owns).

Events, fleet rows, rounds and model records are passed through as the Store and the Registry
return them (`edge_agent.events.Event` fields plus ``received_ns`` and ``labels`` for events;
`FleetRow` documents the fleet's latency keys).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from edge_agent import topics

Name = Annotated[str, AfterValidator(lambda v: topics.check_name(v, "name"))]
Stream = Literal["das", "dts"]
WindowField = Literal["score", "energy", "threshold"]
LabelKind = Literal["confirmed", "false_alarm", "maintenance", "note"]
ModelState = Literal["candidate", "canary", "production", "retired"]


class Page(BaseModel):
    items: list[dict[str, Any]]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page, null on the last one")


class Items(BaseModel):
    items: list[dict[str, Any]]
    now_ns: int = Field(description="server time, for ages without clock skew")


class FleetRow(BaseModel):
    """One gateway's latest health (`cloud.store.Store.fleet`); the other keys of the row
    (status, model, throughput, backlog, drops) pass through as they are."""

    model_config = ConfigDict(extra="allow")

    site: str
    gateway: str
    latency_p50_ms: float | None = Field(
        None, description="frame received -> window scored, median over every stream's frames "
                          "in the gateway's last health interval (ms)")
    latency_p99_ms: float | None = Field(
        None, description="the same, 99th percentile: on a gateway with a dts stream (5 s "
                          "hop) usually a dts frame's wait; see latency_p99_ms_by_stream")
    latency_p50_ms_by_stream: dict[str, float] = Field(
        default_factory=dict, description="median per stream (das, dts), ms; {} from agents "
                                          "that do not report per stream")
    latency_p99_ms_by_stream: dict[str, float] = Field(
        default_factory=dict, description='99th percentile per stream, e.g. {"das": 480, '
                                          '"dts": 4030} (ms); {} from older agents')
    fa_mutes_active: int | None = Field(
        None, description="channel groups (all streams) where an operator-labelled false alarm "
                          "mutes flags now: they flag only above 1.25x the labelled pattern's "
                          "score; null from agents that do not report it")
    fa_muted_windows: int | None = Field(
        None, description="scored windows with at least one flag muted by a labelled false "
                          "alarm, since the agent started; null from older agents")
    fa_muted_groups: int | None = Field(
        None, description="channel-group flags muted by labelled false alarms since the agent "
                          "started (a window muting 3 groups counts 3); null from older agents")


class Fleet(BaseModel):
    items: list[FleetRow]
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
    kind: str = Field("", max_length=32, pattern=r"^[a-z0-9_]*$",
                      description="a confirmed event's anomaly kind (leak, sand, ...)")


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
    dead_letters: int | None = Field(
        None, description="lines and messages ingestion could never store (kept in its "
                          "dead-letter files), summed over ingestion processes; null if unknown")


class Me(BaseModel):
    name: str
    role: str
