"""Downsampled feature/score summaries and the health heartbeat: public contracts.

`FeatureSummary` travels on ``features/{stream}`` about once a second per stream: one value
per channel group (``group_size`` adjacent channels starting at ``ch_start``), the cloud's
waterfall and history. Two encodings, told apart by the first bytes (`FeatureSummary.decode`):

schema 1, JSON (``to_json``): one object, the arrays as JSON number lists.
schema 2, packed (``to_packed``, the default since the JSON of 3,072 floats cost the cloud
    ~0.5 ms of CPU per summary to read)::

        b"FWS2"                     4 bytes, magic
        header length               uint32 little-endian
        header                      UTF-8 JSON object: site, gateway, stream, t_ns, ch_start,
                                    group_size, model_version, n (groups), n_flagged
        score, energy, threshold    n x float32 little-endian each
        flagged                     n_flagged x uint32 little-endian (group indices)

    The payload is exactly that long. `split_packed` checks the framing and returns the
    header and the arrays (numpy views, no per-value Python work) for readers that want
    arrays, not a `FeatureSummary`. `HEALTH_KEYS` are the keys every retained health message has;
`HEALTH_OPTIONAL_KEYS` those it may have.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: `FeatureSummary.schema`: the version of the feature summary's JSON
SCHEMA_VERSION = 1
#: the health heartbeat's ``schema`` value: this module owns the health message's contract
#: (its writers `edge_agent.main`, `edge_agent.uplink_retained`; its reader `cloud.ingest`)
HEALTH_SCHEMA = 1
PACKED_SCHEMA = 2
PACKED_MAGIC = b"FWS2"
_PACKED_HEADER_KEYS = frozenset({"site", "gateway", "stream", "t_ns", "ch_start", "group_size",
                                 "model_version", "n", "n_flagged"})
_MAX_HEADER = 4096

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
    # {stream: [{"model_version", "windows", "rows", "score_psi", "saturation_rate",
    # "out_of_range_rate", "fallback_rate"}, ...]}: `edge_agent.model_health`, per model
    # version that scored since the previous heartbeat (rates and PSI may be null)
    "model_health",
    # operator-labelled false alarms muting flags (`edge_agent.fa_calibration`), ints >= 0:
    # channel groups with a false-alarm floor now (all streams), and since the agent started
    # the flagged windows with at least one group muted and the groups muted (summed over
    # windows)
    "fa_mutes_active", "fa_muted_windows", "fa_muted_groups",
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
    schema: int = SCHEMA_VERSION  # of the JSON encoding; the packed one is PACKED_SCHEMA

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

    def to_packed(self) -> bytes:
        """The schema 2 payload (see the module docstring)."""
        header = json.dumps({
            "site": self.site, "gateway": self.gateway, "stream": self.stream,
            "t_ns": self.t_ns, "ch_start": self.ch_start, "group_size": self.group_size,
            "model_version": self.model_version, "n": len(self.score),
            "n_flagged": len(self.flagged)}, separators=(",", ":")).encode()
        arrays = [np.asarray(getattr(self, k), "<f4").tobytes()
                  for k in ("score", "energy", "threshold")]
        return b"".join([PACKED_MAGIC, struct.pack("<I", len(header)), header, *arrays,
                         np.asarray(self.flagged, "<u4").tobytes()])

    @classmethod
    def from_packed(cls, payload: bytes) -> FeatureSummary:
        h, score, energy, threshold, flagged = split_packed(payload, json.loads)
        return cls(site=h["site"], gateway=h["gateway"], stream=h["stream"], t_ns=h["t_ns"],
                   ch_start=h["ch_start"], group_size=h["group_size"],
                   score=score.tolist(), energy=energy.tolist(), threshold=threshold.tolist(),
                   model_version=h["model_version"], flagged=flagged.tolist())

    @classmethod
    def decode(cls, payload: bytes) -> FeatureSummary:
        """Either encoding: packed (schema 2) if it starts with `PACKED_MAGIC`, else JSON."""
        if bytes(payload[:4]) == PACKED_MAGIC:
            return cls.from_packed(payload)
        return cls.from_json(payload)

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


def split_packed(payload: bytes, loads: Callable[[bytes], Any]
                 ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(header, score, energy, threshold, flagged)`` of a schema 2 payload; the arrays are
    read-only views into `payload`. Checks the framing, the header's keys and types and that
    the arrays are finite and the flags in range (what `FeatureSummary` checks), with numpy.

    Raises
    ------
    SummaryError
        For anything else than a well-formed schema 2 payload.
    """
    mv = memoryview(payload)
    if len(mv) < 8 or bytes(mv[:4]) != PACKED_MAGIC:
        raise SummaryError("not a packed summary (magic)")
    (hlen,) = struct.unpack_from("<I", mv, 4)
    if not (2 <= hlen <= _MAX_HEADER) or 8 + hlen > len(mv):
        raise SummaryError(f"bad header length {hlen}")
    try:
        h = loads(bytes(mv[8:8 + hlen]))
    except ValueError as exc:  # json, orjson and UnicodeDecodeError are ValueErrors
        raise SummaryError(f"header is not JSON: {exc}") from None
    if not isinstance(h, dict) or h.keys() != _PACKED_HEADER_KEYS:
        raise SummaryError(f"header keys must be {sorted(_PACKED_HEADER_KEYS)}")
    _check_header(h)
    n, nf = h["n"], h["n_flagged"]
    if len(mv) != 8 + hlen + 12 * n + 4 * nf:
        raise SummaryError(f"payload is {len(mv)} bytes, the header says "
                           f"{8 + hlen + 12 * n + 4 * nf}")
    body = np.frombuffer(mv, "<f4", 3 * n, 8 + hlen)
    if not np.isfinite(body).all():
        raise SummaryError("score, energy and threshold must hold finite numbers")
    flagged = np.frombuffer(mv, "<u4", nf, 8 + hlen + 12 * n)
    if nf and int(flagged.max()) >= n:
        raise SummaryError("flagged index out of range")
    return h, body[:n], body[n:2 * n], body[2 * n:], flagged


def _check_header(h: dict[str, Any]) -> None:
    if h["stream"] not in ("das", "dts"):
        raise SummaryError(f"unknown stream {h['stream']!r}")
    for k in ("site", "gateway", "model_version"):
        if not isinstance(h[k], str):
            raise SummaryError(f"{k} must be a string")
    for k in ("t_ns", "ch_start", "group_size", "n", "n_flagged"):
        if type(h[k]) is not int:
            raise SummaryError(f"{k} must be an integer, got {h[k]!r}")
    if h["group_size"] < 1 or h["ch_start"] < 0 or h["n_flagged"] < 0:
        raise SummaryError("group_size must be >= 1, ch_start and n_flagged >= 0")
    if not 1 <= h["n"] <= 1 << 20:
        raise SummaryError(f"n must be 1 to {1 << 20}, got {h['n']}")
    if h["n_flagged"] > h["n"]:
        raise SummaryError("more flagged groups than groups")
