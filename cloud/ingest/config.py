"""Settings of the ingestion process (built by the caller, passed explicitly)."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cloud import schema
from edge_agent.config import BrokerConfig


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Everything `run_ingest` needs; the defaults suit one machine on loopback.

    MQTT: `broker` (credentials, TLS; see `edge_agent.mqtt_client`) or, without it, plain
    `mqtt_host`:`mqtt_port`. A persistent session (MQTT v5, ``clean_start=False``,
    `session_expiry_s`), so QoS1 messages published while ingestion is down wait at the
    broker; `receive_maximum` caps the unacknowledged QoS1 messages the broker sends us.
    The client id (`mqtt_client_id`): `client_id` if given, else the login (the shipped
    brokers use the username as client id, so only that login owns the session), else,
    anonymous, one unique to this process (the session then ends with the process).

    Scale-out (`share_group`): feature summaries, the bulk of the traffic, are subscribed as
    the MQTT shared subscription ``$share/{share_group}/+/+/features/+``, so the broker
    hands each summary to one of the processes in the group. Events, health and model state
    are subscribed by the `primary` process alone, plainly and in its persistent session:
    each event id is re-sent as it grows (announced, then final), and InfluxDB keeps the last
    write of a point, so one writer per event stream keeps the final version last. The shared
    feature subscription always has a clean session of its own (session expiry 0; client id
    ``{client_id}-features`` on the primary): when a process stops, the broker drops it
    from the group instead of holding its share (`cloud.ingest.mqtt.connections`).

    Batching: a batch closes at `batch_lines` lines, `batch_bytes` payload bytes,
    `linger_s` after its first message, or when nothing new came for `idle_s`; while no
    write is in flight, `quick_linger_s` after its first message (the first lines of a
    burst go out at once, and the next batches fill while they are written).
    `batch_lines` is a quarter of `receive_maximum`: while `commit_threads` (2) batches
    are being written the broker can still send the next ones, which the writer builds
    meanwhile (QoS1 messages are acknowledged only once written, so a window of a batch or
    two would leave the MQTT thread and the writer idle during each write).
    While InfluxDB is unreachable, QoS0 messages (features) are buffered up to
    `buffer_bytes` and dropped (counted) beyond it; QoS1 messages wait at the broker.

    Hostile input: a message above its kind's cap (`max_features_bytes` for summaries,
    `max_message_bytes` for events, health and model state) is refused before parsing; a
    message timed more than `max_future_s` ahead of its arrival is refused. One write body
    is at most `max_body_bytes` (InfluxDB 1.x refuses bodies over its own limit, 25 MB by
    default, with a broken pipe rather than a 413). A line InfluxDB can never take goes to
    the dead-letter files in `dead_letter_dir` (default: a directory under the system temp
    dir named after `client_id`), each at most `dead_letter_file_bytes`, `dead_letter_files`
    of them kept, each record at most `dead_letter_record_bytes` of the line.

    Durability of QoS0 summaries: with `spool` on, each is appended to an on-disk spool in
    `spool_dir` (at most `spool_bytes`) before it is buffered, and committed once written;
    a run after a SIGKILL replays what was received but not written.
    """

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    broker: BrokerConfig | None = None
    client_id: str | None = None
    session_expiry_s: int = 7 * 86400
    receive_maximum: int = 2000
    keepalive_s: int = 30
    mqtt_protocol: str = "5"  # "5", or "3.1.1" for brokers without MQTT v5 (NATS)
    share_group: str | None = None  # features via $share/{share_group}/... (see above)
    primary: bool = True  # also events, health and model state (one primary per deployment)
    features: bool = True  # False: a primary taking events, health and model state only

    influx_url: str = "http://127.0.0.1:8086"
    influx_username: str | None = None
    influx_password: str | None = None
    db: str = schema.DB
    retention: schema.Retention = field(default_factory=schema.Retention)

    batch_lines: int = 500
    batch_bytes: int = 16 << 20
    linger_s: float = 0.2
    idle_s: float = 0.02
    quick_linger_s: float = 0.02  # the linger while no write is in flight (see above)
    commit_threads: int = 2  # batches written at once (see `cloud.ingest.commits`)
    buffer_bytes: int = 256 << 20
    write_timeout_s: float = 30.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    drain_s: float = 5.0
    history_step_s: int = schema.HISTORY_STEP_S
    stats_interval_s: float = 60.0
    status_interval_s: float = 5.0  # the `ingest` status point that the API's /health reads

    max_features_bytes: int = 8 << 20
    max_message_bytes: int = 256 << 10
    max_future_s: float = 300.0
    max_body_bytes: int = 8 << 20
    broken_split_bytes: int = 1 << 20  # a broken pipe on a body above this: split it
    broken_attempts: int = 3  # a lone line broken this often in a row is dead-lettered
    dead_letter_dir: str | None = None
    spool: bool = True  # QoS0 summaries on disk until written (they survive a SIGKILL)
    spool_dir: str | None = None
    spool_bytes: int = 256 << 20
    dead_letter_file_bytes: int = 8 << 20
    dead_letter_files: int = 4
    dead_letter_record_bytes: int = 64 << 10

    @property
    def broker_config(self) -> BrokerConfig:
        return self.broker or BrokerConfig(host=self.mqtt_host, port=self.mqtt_port,
                                          keepalive_s=self.keepalive_s)

    @property
    def mqtt_client_id(self) -> str:
        if self.client_id:
            return self.client_id
        if self.broker is not None and self.broker.username:
            return self.broker.username
        return f"fiberwatch-ingest-{socket.gethostname()}-{os.getpid()}"

    def __post_init__(self) -> None:
        if self.mqtt_protocol not in ("5", "3.1.1"):
            raise ValueError(f"mqtt_protocol must be '5' or '3.1.1', got {self.mqtt_protocol!r}")
        g = self.share_group
        if g is not None and (not g or any(c in g for c in "/+#") or len(g) > 64):
            raise ValueError(f"share_group must be one topic level without / + #, got {g!r}")
        if not (self.primary or self.features):
            raise ValueError("a process that is neither primary nor takes features has "
                             "nothing to subscribe to")
        if not self.features and g is None:
            raise ValueError("a primary without features needs share_group (the feature "
                             "workers' group); else no process takes features")
        if not self.primary and g is None:
            raise ValueError("a process that is not primary needs share_group (it would "
                             "write every summary a second time)")
        for name in ("batch_lines", "batch_bytes", "buffer_bytes", "receive_maximum",
                     "commit_threads",
                     "history_step_s", "mqtt_port", "max_features_bytes", "max_message_bytes",
                     "max_body_bytes", "broken_split_bytes", "broken_attempts",
                     "dead_letter_file_bytes", "dead_letter_files", "dead_letter_record_bytes",
                     "spool_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("linger_s", "idle_s", "quick_linger_s", "write_timeout_s", "backoff_initial_s",
                     "backoff_max_s", "drain_s", "stats_interval_s", "status_interval_s",
                     "max_future_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def payload_cap(self, kind: str) -> int:
        """The byte cap of one message of `kind` (``features`` or another kind)."""
        return self.max_features_bytes if kind == "features" else self.max_message_bytes

    def dead_letter_path(self) -> Path:
        """The dead-letter directory (`dead_letter_dir`, or one under the temp dir)."""
        return Path(self.dead_letter_dir) if self.dead_letter_dir else self._state("dead-letter")

    def spool_path(self) -> Path:
        """The QoS0 spool directory (`spool_dir`, or one under the temp dir per client id:
        one process per client id, as for the MQTT session)."""
        return Path(self.spool_dir) if self.spool_dir else self._state("spool")

    @property
    def instance(self) -> str:
        """A stable name of this ingestion (unlike an anonymous `mqtt_client_id`): the
        client id, else the login, else ``anonymous``. Names its state and status point."""
        return self.client_id or (self.broker.username if self.broker else None) or "anonymous"

    def _state(self, name: str) -> Path:
        """A directory per client id *and* broker and database: another stack on the same
        machine (a test, a benchmark) never replays this one's spool."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.instance)
        b = self.broker_config
        where = f"{b.host}:{b.port}|{self.influx_url}|{self.db}"
        tag = hashlib.sha256(where.encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / "fiberwatch-ingest" / f"{safe}-{tag}" / name
