"""Line protocol for every measurement of `cloud.schema`, and the packed-array codec.

Lines are serialised by ``influxdb.line_protocol.make_line`` (the `influxdb` 5.3 package):
escaping is its job, not ours. The one exception is `features_line`, ingestion's hot path,
which writes the same text itself (tags and strings still escaped by ``make_line``,
memoised). Numbers are coerced to the field's declared type first, so a float field that
arrives as JSON ``1`` does not become an integer field (InfluxDB rejects a type change
within a shard).
"""

from __future__ import annotations

import functools
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pybase64
from influxdb.line_protocol import make_line

from cloud import schema
from edge_agent.events import Event

FORMAT = 1
DTYPES = {"score": "<f2", "energy": "<f4", "threshold": "<f2"}
_F16_MAX = 65504.0
#: Every float16 bit pattern (as uint16) as float32: `unpack` converts by look-up.
F16_AS_F32 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
EVENT_TAGS = ("id", "site", "gateway", "stream", "severity", "class_hint", "model_version")
_EVENT_INTS = ("start_ns", "end_ns", "ch_start", "ch_end", "n_windows", "detected_ns", "schema")
_EVENT_FLOATS = ("dist_start_m", "dist_end_m", "peak_score", "mean_score", "threshold")
_CLOUD_NAMESPACE = uuid.UUID("0c5e8f6a-3d2b-4e7c-9a41-7b2f6d1e8c35")
HEALTH_FLOATS = ("uptime_s", "frames_per_s", "samples_per_s", "rss_mb")
HEALTH_INTS = ("queue_depth", "gaps", "outbox_depth", "outbox_evicted")
#: optional health ints (`edge_agent.summary.HEALTH_OPTIONAL_KEYS`): labelled false alarms
#: muting flags on the gateway; fields only when the agent sends them
HEALTH_OPTIONAL_INTS = ("fa_mutes_active", "fa_muted_windows", "fa_muted_groups")


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, Any], time_ns: int) -> str:
    """One line of line protocol (no trailing newline); None-valued fields are left out."""
    return str(make_line(measurement, tags=dict(tags), time=int(time_ns),
                         fields={k: v for k, v in fields.items() if v is not None}))


def pack(values: Sequence[float] | np.ndarray, dtype: str) -> str:
    """Pack a 1-D array as base64 of little-endian `dtype`, padded to whole base64 quads.

    Float16 values beyond its range are stored as +-65504 rather than inf; float32 ones
    overflow to inf; NaN stays NaN.
    """
    raw = _convert(np.asarray(values), dtype).tobytes()
    raw += b"\0" * (-len(raw) % 3)
    return pybase64.b64encode_as_string(raw)  # SIMD: ~0.5 us for 4 KB, binascii's ~4.4


def pack_rows(rows: np.ndarray, dtype: str) -> list[str]:
    """`pack` of each row of a 2-D array, the same texts, in one numpy pass and one base64
    call: every row is padded to whole base64 quads, so the text of all rows end to end is
    the rows' texts end to end (ingestion packs a whole batch of summaries at once)."""
    packed = _convert(rows, dtype)
    count, nbytes = packed.shape[0], packed.shape[1] * packed.itemsize
    padded = nbytes + (-nbytes % 3)
    buf = np.zeros((count, padded), dtype=np.uint8)
    buf[:, :nbytes] = packed.view(np.uint8).reshape(count, nbytes)
    text = pybase64.b64encode_as_string(buf.data)
    w = padded // 3 * 4
    return [text[i:i + w] for i in range(0, count * w, w)]


def _convert(a: np.ndarray, dtype: str) -> np.ndarray:
    """`a` as little-endian `dtype` per `pack` (element by element: whole batches alike)."""
    if a.dtype not in (np.float32, np.float64):  # float32 stays: a packed summary's arrays
        a = a.astype(np.float64)  # (converting float32 first changes no value)
    if dtype == "<f2":  # clipping first is the same as rounding and clipping on overflow
        in_range = a.size and -_F16_MAX <= a.min() and a.max() <= _F16_MAX  # (NaN: clip)
        return (a if in_range else np.minimum(np.maximum(a, -_F16_MAX), _F16_MAX)
                ).astype(dtype)
    if a.dtype == np.dtype(dtype):
        return a  # float32 into "<f4": the bytes as they are
    with np.errstate(over="ignore"):
        return a.astype(dtype)


def unpack(strings: Sequence[str], n: int, dtype: str) -> np.ndarray:
    """Decode packed rows of `n` values each into a float32 array of shape (rows, n).

    Raises
    ------
    ValueError
        If a string does not hold `n` values of `dtype`.
    """
    itemsize = np.dtype(dtype).itemsize
    nbytes = n * itemsize
    padded = nbytes + (-nbytes % 3)
    if not strings:
        return np.empty((0, n), dtype=np.float32)
    expect = padded // 3 * 4
    if any(len(s) != expect for s in strings):
        raise ValueError(f"packed row is not {n} x {dtype}")
    buf = pybase64.b64decode("".join(strings), validate=True)
    rows = np.ndarray((len(strings), n), dtype=dtype, buffer=buf, strides=(padded, itemsize))
    if dtype == "<f2":  # a table look-up: faster than numpy's float16 conversion
        return F16_AS_F32[rows.view(np.uint16)]
    return rows.astype(np.float32)


def event_line(e: Event, received_ns: int, gateway_event_id: str | None = None) -> str:
    """The ``event`` point of one event (time = start_ns); `gateway_event_id` is the id the
    gateway gave it, when ingestion stores it under its own (`cloud_event_id`)."""
    d = e.to_dict()
    fields: dict[str, Any] = {k: int(d[k]) for k in _EVENT_INTS}
    fields.update({k: float(d[k]) for k in _EVENT_FLOATS})
    fields["model_hash"] = d["model_hash"]
    fields["received_ns"] = int(received_ns)
    for k in ("kind", "merged_into"):  # optional: only when the agent sent them
        if d.get(k):
            fields[k] = str(d[k])
    if "kind_confidence" in d:
        fields["kind_confidence"] = float(d["kind_confidence"])
    fields["gateway_event_id"] = gateway_event_id
    return line(schema.EVENT, {k: d[k] for k in EVENT_TAGS}, fields, e.start_ns)


def cloud_event_id(site: str, gateway: str, gateway_event_id: str) -> str:
    """The id the cloud stores a gateway's event under: derived from the site and gateway
    of the topic it came on (the authority) and the gateway's own id, so one gateway can
    never write over another gateway's event, and a re-sent event keeps its id."""
    return str(uuid.uuid5(_CLOUD_NAMESPACE, f"{site}/{gateway}/{gateway_event_id}"))


def features_line(measurement: str, *, site: str, gateway: str, stream: str, t_ns: int,
                  ch_start: int, group_size: int, score: np.ndarray, energy: np.ndarray,
                  threshold: np.ndarray, model_version: str, flagged: int,
                  count: int | None = None, threshold_text: str | None = None,
                  packed: tuple[str, str, float] | None = None) -> str:
    """A ``features`` or ``features_10s`` point: the arrays packed per `DTYPES`.

    The hot path of ingestion, so it is formatted here rather than by ``make_line``; the
    line is the same, character for character (the tests compare both): fields in sorted
    order, integers with ``i``, floats by ``repr``, strings quoted and escaped (base64
    needs no escaping). `threshold_text`: `threshold` already packed (`LastPacked`);
    `packed`: score and energy already packed (`pack_rows`) and the score's maximum.
    """
    if threshold_text is None:
        threshold_text = pack(threshold, DTYPES["threshold"])
    if packed is None:
        packed = (pack(score, DTYPES["score"]), pack(energy, DTYPES["energy"]),
                  float(score.max()))
    score_text, energy_text, score_max = packed
    count_field = "" if count is None else f",count={int(count)}i"
    return (f"{_series_key(measurement, site, gateway, stream)} ch_start={int(ch_start)}i"
            f'{count_field},energy="{energy_text}",'
            f"flagged={int(flagged)}i,fmt={FORMAT}i,group_size={int(group_size)}i,"
            f"model_version={_string_field(model_version)},n={len(score)}i,"
            f'score="{score_text}",score_max={score_max!r},'
            f'threshold="{threshold_text}" {int(t_ns)}')


class LastPacked:
    """`pack` that reuses the text of a key's previous array while its bytes are unchanged:
    a gateway's thresholds change only with its model, so most summaries repeat them. The
    bytes are compared, never assumed: a changed array is packed anew. Keeps `max_keys`.
    Thread-safe (a primary's two MQTT connections parse on two threads)."""

    def __init__(self, max_keys: int = 4096) -> None:
        self.max_keys = max_keys
        self._last: dict[tuple[object, str, str], tuple[bytes, str]] = {}
        self._lock = threading.Lock()

    def pack(self, key: object, a: np.ndarray, dtype: str) -> str:
        raw = a.tobytes()
        k = (key, a.dtype.str, dtype)
        hit = self._last.get(k)
        if hit is not None and hit[0] == raw:
            return hit[1]
        text = pack(a, dtype)
        with self._lock:
            if k not in self._last and len(self._last) >= self.max_keys:
                self._last.pop(next(iter(self._last)))
            self._last[k] = (raw, text)
        return text


@functools.lru_cache(maxsize=4096)
def _series_key(measurement: str, site: str, gateway: str, stream: str) -> str:
    """Measurement and escaped tags of a features series (a pure function, memoised)."""
    return str(make_line(measurement, tags={"site": site, "gateway": gateway, "stream": stream}))


@functools.lru_cache(maxsize=1024)
def _string_field(value: str) -> str:
    """A string field value, quoted and escaped as ``make_line`` does."""
    return str(make_line("m", fields={"f": value})).split(" ", 1)[1][2:]


def latency_field(percentile: str, stream: str) -> str:
    """The ``health``/``fleet`` field of one stream's latency percentile: ``latency_p99_ms_das``
    (`cloud.schema`)."""
    return f"latency_{percentile}_ms_{stream}"


def health_fields(d: Mapping[str, Any], received_ns: int) -> dict[str, Any]:
    """Fields of a ``health``/``fleet`` point from a validated health message."""
    fields: dict[str, Any] = {k: float(d[k]) for k in HEALTH_FLOATS}
    fields.update({k: int(d[k]) for k in HEALTH_INTS})
    fields.update({k: int(d[k]) for k in HEALTH_OPTIONAL_INTS if k in d})  # newer agents
    lat = d["latency_ms"]
    fields["latency_p50_ms"] = float(lat["p50"])
    fields["latency_p99_ms"] = float(lat["p99"])
    for stream, lat in d.get("latency_ms_by_stream", {}).items():  # optional: newer agents
        fields[latency_field("p50", stream)] = float(lat["p50"])
        fields[latency_field("p99", stream)] = float(lat["p99"])
    drops = d["drops"]
    fields["drops_total"] = int(sum(drops.values()))
    fields["drops_json"] = json.dumps(drops, sort_keys=True, separators=(",", ":"))
    for k in ("status", "model_version", "model_hash"):
        fields[k] = str(d[k])
    fields["t_ns"] = int(d["t_ns"])
    fields["received_ns"] = int(received_ns)
    return fields


def health_lines(d: Mapping[str, Any], received_ns: int, *, fleet: bool = True) -> list[str]:
    """The ``health`` point and (if `fleet`) the gateway's ``fleet`` snapshot (time 0)."""
    tags = {"site": d["site"], "gateway": d["gateway"]}
    fields = health_fields(d, received_ns)
    out = [line(schema.HEALTH, tags, fields, int(d["t_ns"]))]
    if fleet:
        out.append(line(schema.FLEET, tags, fields, 0))
    return out


def model_state_lines(site: str, gateway: str, d: Mapping[str, Any], received_ns: int) -> list[str]:
    """The ``model_state`` point, and the ``model_*`` fields of the ``fleet`` snapshot."""
    tags = {"site": site, "gateway": gateway}
    t = d.get("t_ns")
    t_ns = t if isinstance(t, int) and not isinstance(t, bool) and t > 0 else received_ns
    fields = {"model_version": str(d["model_version"]), "model_hash": str(d["model_hash"]),
              "status": str(d["status"]), "received_ns": int(received_ns),
              "state_json": json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)}
    fleet = {"model_status": fields["status"], "model_state_ns": int(t_ns)}
    return [line(schema.MODEL_STATE, tags, fields, t_ns), line(schema.FLEET, tags, fleet, 0)]


def label_line(event_id: str, *, label: str, note: str, user: str, created_ns: int,
               kind: str = "") -> str:
    """A ``label`` point; `note` is stored JSON-encoded (see `note_text`)."""
    fields: dict[str, Any] = {"note": json.dumps(note), "user": user,
                              "created_ns": int(created_ns)}
    if kind:
        fields["kind"] = kind
    return line(schema.LABEL, {"event_id": event_id, "label": label}, fields, created_ns)


def note_text(stored: str | None) -> str:
    """The note as written. Line protocol cannot carry a newline in a string (the
    serializer writes it as the two characters backslash-n, indistinguishable from typed
    ones), so notes are stored as JSON text; anything else is returned as it is."""
    if not stored:
        return ""
    try:
        value = json.loads(stored)
    except ValueError:
        return stored
    return value if isinstance(value, str) else stored
