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
dropped (counted) beyond it, and are lost while ingestion itself is down.

Entry points: ``run_ingest(settings, stop_event)`` and ``main(argv)``
(``python -m cloud.ingest --help``). Counters: `IngestStats`.
"""

from cloud.ingest.config import IngestSettings
from cloud.ingest.service import main, run_ingest
from cloud.ingest.stats import IngestStats

__all__ = ["IngestSettings", "IngestStats", "main", "run_ingest"]
