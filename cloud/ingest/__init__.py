"""MQTT -> InfluxDB ingestion, run as its own process.

Data flow: `mqtt.Subscriber` (paho, MQTT v5 persistent session, manual acks) parses each
message (`parse.parse`) and puts it in a bounded `buffer.Buffer`; one `writer.Writer`
thread turns records into line protocol (`cloud.codec`), downsamples feature summaries
into 10 s history (`downsample.Downsampler`), writes batches to InfluxDB with exponential
backoff, and acknowledges QoS1 messages only once their batch is stored.

Durability you get: QoS1 messages (events, health, model state) are not lost while
InfluxDB is down for any length of time, nor while ingestion is down for less than the
session expiry (7 days by default; the broker's own queue limits apply). QoS0 messages
(feature summaries, ~1 Hz) are buffered up to ``buffer_bytes`` while InfluxDB is down and
dropped (counted) beyond it; each is also appended to an on-disk spool (`spool.Spool`)
until written, so a killed process's summaries are written by the next run. Summaries
published while ingestion is down wait at the broker only if it queues QoS0 messages for
persistent sessions (Mosquitto: ``queue_qos0_messages true``, bounded by
``max_queued_messages``/``max_queued_bytes``).

Hostile input (`limits`, `deadletter`): a message over its kind's byte cap or timed more
than ``max_future_s`` ahead is refused before it is parsed or written (counted as
malformed); a write body never exceeds ``max_body_bytes`` and a body InfluxDB refuses (400,
413, or a broken pipe past its own body limit) is split until the lines it can never take
are alone, which go to bounded, rotated dead-letter files, counted and reported in the
API's /health. Events are stored under an id scoped by the topic's site and gateway
(`cloud.codec.cloud_event_id`): one gateway cannot write over another's events.

Entry points: ``run_ingest(settings, stop_event)`` and ``main(argv)``
(``python -m cloud.ingest --help``). Counters: `IngestStats`.
"""

from cloud.ingest.config import IngestSettings
from cloud.ingest.service import main, run_ingest
from cloud.ingest.stats import IngestStats

__all__ = ["IngestSettings", "IngestStats", "main", "run_ingest"]
