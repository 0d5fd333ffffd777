"""Settings of the ingestion process (built by the caller, passed explicitly)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud import schema


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Everything `run_ingest` needs; the defaults suit one machine on loopback.

    MQTT: a persistent session (MQTT v5, ``clean_start=False``, `session_expiry_s`) under
    the fixed `client_id`, so QoS1 messages published while ingestion is down wait at the
    broker; `receive_maximum` caps the unacknowledged QoS1 messages the broker sends us.
    Only one ingestion process may use a given `client_id` at a time.

    Batching: a batch closes at `batch_lines` lines, `batch_bytes` payload bytes,
    `linger_s` after its first message, or when nothing new came for `idle_s`.
    While InfluxDB is unreachable, QoS0 messages (features) are buffered up to
    `buffer_bytes` and dropped (counted) beyond it; QoS1 messages wait at the broker.
    """

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_tls_ca: str | None = None  # CA file: enables TLS
    client_id: str = "fiberwatch-ingest"
    session_expiry_s: int = 7 * 86400
    receive_maximum: int = 1000
    keepalive_s: int = 30

    influx_url: str = "http://127.0.0.1:8086"
    influx_username: str | None = None
    influx_password: str | None = None
    db: str = schema.DB
    retention: schema.Retention = field(default_factory=schema.Retention)

    batch_lines: int = 5000
    batch_bytes: int = 16 << 20
    linger_s: float = 0.2
    idle_s: float = 0.02
    buffer_bytes: int = 256 << 20
    write_timeout_s: float = 30.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    drain_s: float = 5.0
    history_step_s: int = schema.HISTORY_STEP_S
    stats_interval_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("batch_lines", "batch_bytes", "buffer_bytes", "receive_maximum",
                     "history_step_s", "mqtt_port"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("linger_s", "idle_s", "write_timeout_s", "backoff_initial_s",
                     "backoff_max_s", "drain_s", "stats_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
