"""Downsampled feature/score summaries and the health heartbeat: public contracts.

`FeatureSummary` travels as JSON on ``features/{stream}`` about once a second per stream:
one value per channel group (``group_size`` adjacent channels starting at ``ch_start``), the
cloud's waterfall and history. `HEALTH_KEYS` are the keys every retained health message has;
`HEALTH_OPTIONAL_KEYS` those it may have.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: `FeatureSummary.schema`: the version of the feature summary's JSON
SCHEMA_VERSION = 1
#: the health heartbeat's ``schema`` value: this module owns the health message's contract
#: (its writers `edge_agent.main`, `edge_agent.uplink_retained`; its reader `cloud.ingest`)
HEALTH_SCHEMA = 1

#: Keys of the retained health heartbeat (JSON object on the ``health`` topic).
HEALTH_KEYS = (
    "schema",  # HEALTH_SCHEMA
    "site", "gateway",
    "t_ns",  # when it was sent
    "status",  # "ok" | "degraded" | "stopping" | "offline" (last will)
    "uptime_s",
    "frames_per_s", "samples_per_s",
    "queue_depth",
    "drops",  # {reason: count}, cumulative: queue_full, malformed:<reason>, nonfinite, ...
    "gaps",  # cumulative sequence gaps (frames missing)
    "latency_ms",  # {"p50": float, "p99": float} frame-to-score
    "outbox_depth",
    "outbox_evicted",
    "model_version", "model_hash",
    "rss_mb",
)

#: Optional keys of the health heartbeat, validated when present (agents older than them do
#: not send them; readers must accept their absence). The agent also sends informational
#: extras (``windows``, ``events``, ``models``) that no reader depends on.
HEALTH_OPTIONAL_KEYS = (
    # {stream: {"p50": float, "p99": float}} frame-to-score of that stream's frames alone
    # (``latency_ms`` mixes every stream's frames). Only streams that scored a window since
    # the previous heartbeat; stream is a `FeatureSummary.stream` kind (das, dts).
    "latency_ms_by_stream",
)


class SummaryError(ValueError):
    """A feature summary that does not satisfy the schema."""


@dataclass(frozen=True, slots=True)
class FeatureSummary:
    site: str
    gateway: str
    stream: str
    t_ns: int  # end of the last window summarised
    ch_start: int
    group_size: int
    score: list[float]  # max anomaly score per group over the interval
    energy: list[float]  # mean log10 RMS per group (DAS) or mean temperature (DTS)
    threshold: list[float]  # threshold in force per group; 0.0 = warming up, none yet
    model_version: str
    flagged: list[int] = field(default_factory=list)  # group indices above threshold
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in ("t_ns", "ch_start", "group_size", "schema"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not -(2**63) <= v < 2**63:
                raise SummaryError(f"{name} must be an integer in the int64 range, got {v!r}")
        for name in ("site", "gateway", "model_version"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v or len(v) > 256:
                raise SummaryError(f"{name} must be a non-empty string, got {v!r}")
        for name in ("score", "energy", "threshold", "flagged"):
            if not isinstance(getattr(self, name), list):
                raise SummaryError(f"{name} must be a list")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in self.flagged):
            raise SummaryError("flagged must hold group indices")
        n = len(self.score)
        if self.stream not in ("das", "dts"):
            raise SummaryError(f"unknown stream {self.stream!r}")
        if self.group_size < 1 or self.ch_start < 0:
            raise SummaryError("group_size must be >= 1 and ch_start >= 0")
        if n == 0 or len(self.energy) != n or len(self.threshold) != n:
            raise SummaryError("score, energy and threshold must be non-empty and equally long")
        for name in ("score", "energy", "threshold"):
            values = getattr(self, name)
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                raise SummaryError(f"{name} must hold finite numbers")
        if any(not (0 <= i < n) for i in self.flagged):
            raise SummaryError("flagged index out of range")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> FeatureSummary:
        try:
            d: Any = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise SummaryError(f"not JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise SummaryError("summary must be a JSON object")
        try:
            return cls(**d)
        except TypeError as exc:
            raise SummaryError(str(exc)) from exc
