"""The InfluxDB schema of fiberwatch (version 1): a public contract.

One database, ``fiberwatch``, created on start (idempotently, `ensure_schema`), with three
retention policies. Every writer names its retention policy (``/write?rp=...``); the
database's default (``autogen``) is not used.

================  =========  ===========================================================
RP                duration   holds
================  =========  ===========================================================
``raw``           24h        ``features``: per-second feature summaries
``history``       365d       ``features_10s`` (10 s max/mean), ``health``, ``fl_round``
``events``        INF        ``event``, ``label``, ``fleet`` (latest health), ``model_state``,
                             ``ingest`` (ingestion's status)
================  =========  ===========================================================

Measurements (tags first, then fields; ``time`` in ns):

``event`` (events)
    tags ``id, site, gateway, stream, severity, class_hint, model_version``; fields: every
    other `edge_agent.events.Event` field under its own name (ints as integers, floats as
    floats, ``model_hash`` string) plus ``start_ns``, ``received_ns`` and
    ``gateway_event_id``; time = start_ns. The ``id`` tag is ingestion's
    `cloud.codec.cloud_event_id` of the topic's site and gateway and the gateway's own id
    (kept as ``gateway_event_id``): a gateway cannot write over another one's event.
    The same id written twice is one point (same series, same time); the later write wins.
``label`` (events)
    tags ``event_id, label`` (confirmed | false_alarm | maintenance | note); fields ``note``
    (JSON text of the note: line protocol cannot carry newlines), ``user``, ``created_ns``,
    ``kind`` (the anomaly kind of a confirmed event, e.g. leak; may be absent);
    time = created_ns.
``features`` (raw) and ``features_10s`` (history)
    tags ``site, gateway, stream``; fields ``score, energy, threshold`` (packed arrays, one
    value per channel group), ``n`` (groups), ``ch_start``, ``group_size``, ``fmt`` (packing
    format, 1), ``model_version``, ``flagged`` (count of flagged groups), ``score_max``; in
    ``features_10s`` also ``count`` (summaries merged). time = the summary's ``t_ns``, or
    the start of its 10 s bucket. ``features_10s`` holds per-group max score, mean energy,
    mean threshold. One point per gateway, stream and second: a history window reads 1,024x
    fewer points than with one point per channel (measured, 1,024 channels, busy 2-core
    machine: per channel, a 5-minute window took 4.6 s and 10 minutes 13 s; packed, influxd
    answers a whole hour in ~0.25 s).
``health`` (history) and ``fleet`` (events)
    tags ``site, gateway``; numeric fields from `edge_agent.summary.HEALTH_KEYS`
    (``latency_ms`` as ``latency_p50_ms``/``latency_p99_ms``, ``drops`` as ``drops_total``
    plus ``drops_json``), strings ``status, model_version, model_hash``, ``t_ns``,
    ``received_ns``. The optional ``latency_ms_by_stream`` (newer agents) as
    ``latency_p50_ms_<stream>``/``latency_p99_ms_<stream>`` (floats, e.g.
    ``latency_p99_ms_das``, ``latency_p99_ms_dts``): only for the streams that scored a
    window since the gateway's previous heartbeat. ``latency_p99_ms`` mixes every stream's
    frames, so a gateway with a dts stream (5 s hop) shows that stream's wait there.
    The optional ``fa_mutes_active``, ``fa_muted_windows`` and ``fa_muted_groups`` (integers:
    labelled false alarms muting flags on the gateway, `edge_agent.fa_calibration`) as
    fields of the same names, when the agent sends them.
    ``health`` is timed by ``t_ns``; ``fleet`` keeps one point per gateway at time 0,
    overwritten by each newer health message (and merged with the latest model state as
    ``model_status``), so the fleet view is one small query. Overwriting merges fields: a
    stream missing from one heartbeat keeps its last per-stream values in ``fleet``.
``ingest`` (events)
    tag ``client_id`` (`IngestSettings.instance`); fields ``dead_letters`` (lines and
    messages it could never store, kept in its dead-letter files), ``dead_letter_write_errors``,
    ``malformed``, ``dropped``, ``messages_written``, ``updated_ns``; one point per process
    at time 0, overwritten. The API's /health reports the dead letters.
``model_state`` (events)
    tags ``site, gateway``; fields ``model_version, model_hash, status, state_json`` (the
    whole message), ``received_ns``; time = the message's ``t_ns`` if it has one, else
    ``received_ns``.
``fl_round`` (history) -- written by the federation server directly::

    POST /write?db=fiberwatch&rp=history&precision=ns
    fl_round,run_id=<run>,strategy=<name> round=<int>i,participants=<int>i,failures=<int>i,
        loss=<float>,auc=<float>,bytes_up=<int>i,bytes_down=<int>i,duration_s=<float>,
        model_version="<str>" <round end, ns>

    (one line; ``auc`` optional; tag values escaped as line protocol requires). A round
    written twice with the same run_id, strategy and end time is one point.

Packing (``fmt`` 1): an array is little-endian ``float16`` (score, threshold; clipped to
+-65504) or ``float32`` (energy: DTS temperatures need better than 0.06 degC), zero-padded to
a multiple of 3 bytes, then base64 without ``=`` padding (so many rows decode in one call).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from cloud.influx import InfluxClient, InfluxError, quote_ident

log = logging.getLogger(__name__)

DB = "fiberwatch"
RP_RAW, RP_HISTORY, RP_EVENTS = "raw", "history", "events"
EVENT, LABEL = "event", "label"
FEATURES, FEATURES_HISTORY = "features", "features_10s"
HEALTH, FLEET, MODEL_STATE, FL_ROUND = "health", "fleet", "model_state", "fl_round"
INGEST = "ingest"  # one snapshot point per ingestion client id (time 0): its status counters
HISTORY_STEP_S = 10
LABELS = ("confirmed", "false_alarm", "maintenance", "note")

_UNITS = {"ns": 1e-9, "u": 1e-6, "µ": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60,
          "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µ|u|ms|s|m|h|d|w)")


def parse_duration(text: str) -> int:
    """Seconds in an InfluxQL or Go duration (``24h``, ``365d``, ``8760h0m0s``); 0 for INF.

    Raises
    ------
    ValueError
        If `text` is not a duration.
    """
    t = text.strip()
    if t.upper() == "INF" or t == "0s" or t == "0":
        return 0
    pos, total = 0, 0.0
    for m in _PART.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t) or pos == 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 24h, 365d or INF)")
    return round(total)


@dataclass(frozen=True, slots=True)
class Retention:
    """Durations of the three retention policies (InfluxQL literals, ``INF`` for ever)."""

    raw: str = "24h"
    history: str = "365d"
    events: str = "INF"

    def __post_init__(self) -> None:
        for name in ("raw", "history", "events"):
            seconds = parse_duration(getattr(self, name))
            if 0 < seconds < 3600:
                raise ValueError(f"{name} retention must be at least 1h or INF (InfluxDB's "
                                 f"minimum), got {getattr(self, name)!r}")
        if parse_duration(self.raw) == 0:
            raise ValueError("raw retention must be finite")

    def seconds(self, rp: str) -> int:
        """The duration of `rp` in seconds (0 for INF)."""
        return parse_duration(getattr(self, rp))


def ensure_schema(client: InfluxClient, db: str = DB, retention: Retention | None = None) -> None:
    """Create the database and its retention policies, or bring their durations in line.

    Idempotent: safe to run at every start of every process that writes.

    Raises
    ------
    InfluxError
        If InfluxDB refuses (e.g. the user may not create databases).
    """
    retention = retention or Retention()
    qdb = quote_ident(db)
    client.query(f"CREATE DATABASE {qdb}")
    existing = {row["name"]: parse_duration(str(row["duration"]))
                for row in client.rows(f"SHOW RETENTION POLICIES ON {qdb}")}
    for rp in (RP_RAW, RP_HISTORY, RP_EVENTS):
        want = getattr(retention, rp)
        if rp not in existing:
            stmt = (f"CREATE RETENTION POLICY {quote_ident(rp)} ON {qdb} DURATION {want} "
                    "REPLICATION 1")
        elif existing[rp] != parse_duration(want):
            stmt = f"ALTER RETENTION POLICY {quote_ident(rp)} ON {qdb} DURATION {want}"
        else:
            continue
        try:
            client.query(stmt)
        except InfluxError:
            log.error("event=schema_failed db=%s rp=%s statement=%r", db, rp, stmt)
            raise
        log.info("event=schema_changed db=%s rp=%s duration=%s", db, rp, want)
