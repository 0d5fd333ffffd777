"""The MQTT subscriber: a persistent MQTT v5 session, manual acknowledgements.

``on_connect`` subscribes (so a reconnect resubscribes); ``on_message`` only parses and
enqueues. QoS1 messages are acknowledged by the writer once stored (`Subscriber.ack`).
"""

from __future__ import annotations

import logging
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.ingest.buffer import Buffer, Item
from cloud.ingest.config import IngestSettings
from cloud.ingest.parse import FeaturesRecord, Malformed, parse
from cloud.ingest.stats import IngestStats, RateLimitedLog
from edge_agent import topics
from edge_agent.mqtt_client import make_client

log = logging.getLogger(__name__)
SUBSCRIPTIONS = (topics.ALL_EVENTS, topics.ALL_FEATURES, topics.ALL_HEALTH,
                 topics.ALL_MODEL_STATE)
PRIMARY_ONLY = (topics.ALL_EVENTS, topics.ALL_HEALTH, topics.ALL_MODEL_STATE)


def subscriptions(settings: IngestSettings) -> list[str]:
    """Topic filters of one process (`IngestSettings.share_group`, `IngestSettings.primary`)."""
    features = topics.ALL_FEATURES if settings.share_group is None \
        else f"$share/{settings.share_group}/{topics.ALL_FEATURES}"
    return [features, *(PRIMARY_ONLY if settings.primary else ())]
_KIND = {"events": "event", "health": "health", "model_state": "model_state"}


class Subscriber:
    """Receive every gateway's events, features, health and model state into `buffer`."""

    def __init__(self, settings: IngestSettings, buffer: Buffer, stats: IngestStats) -> None:
        self.s = settings
        self.buffer = buffer
        self.stats = stats
        self.accepting = True  # False while stopping: messages stay unacked at the broker
        self.connected = False
        self.subscribed = threading.Event()  # set once the broker granted the subscriptions
        self._limited = RateLimitedLog(log)
        self.v5 = settings.mqtt_protocol == "5"
        c = make_client(settings.broker_config, settings.mqtt_client_id,
                        protocol="v5" if self.v5 else "v311", clean=not settings.primary,
                        session_expiry_s=settings.session_expiry_s if settings.primary else 0,
                        reconnect_delay_s=(1, 30),
                        manual_ack=True, receive_maximum=settings.receive_maximum)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self.client = c

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and start the loop."""
        self.client.loop_start()

    def stop_accepting(self) -> None:
        """Stop taking messages (they stay unacknowledged at the broker for the next run)."""
        self.accepting = False

    def stop(self) -> None:
        """Disconnect (the session, and what is unacknowledged, stays at the broker)."""
        self.client.disconnect()
        self.client.loop_stop()

    def ack(self, mid: int) -> None:
        self.client.ack(mid, 1)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.warning("event=mqtt_connect_failed reason=%r", str(reason))
            return
        self.connected = True
        log.info("event=mqtt_connected session_present=%s", flags.session_present)
        client.subscribe([(t, 1) for t in subscriptions(self.s)])

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reasons: list[ReasonCode], properties: Properties | None) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("event=mqtt_subscribe_failed reasons=%r", failed)
        else:
            self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self.connected = False
        if self.accepting:
            log.warning("event=mqtt_disconnected reason=%r", str(reason))

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if not self.accepting:
            return
        received_ns = time.time_ns()
        qos = msg.qos
        try:
            record = parse(msg.topic, msg.payload)
        except Malformed as exc:
            self.stats.add("malformed", exc.reason)
            self._limited.log(logging.WARNING, exc.reason, "event=malformed reason=%s topic=%s "
                              "detail=%r", exc.reason, msg.topic, exc.detail[:200])
            record = None
        except Exception:  # noqa: BLE001 - a parser bug must not end ingestion: count, log
            self.stats.add("malformed", "internal_error")
            self._limited.log(logging.ERROR, "internal", "event=parse_crashed topic=%s",
                              msg.topic, exc_info=True)
            record = None
        if record is None:  # acked in order with the rest, after the batch before it
            if qos > 0:
                self.buffer.put(Item(None, received_ns, msg.mid, qos, 0, 0))
            return
        if isinstance(record, FeaturesRecord):
            kind, nbytes, lines = "features", record.nbytes, 1
        else:
            kind = _KIND.get(msg.topic.rsplit("/", 1)[-1], "other")
            nbytes, lines = len(msg.payload) + 200, 2
        if self.buffer.put(Item(record, received_ns, msg.mid, qos, nbytes, lines)):
            self.stats.add("received", kind)
        else:
            self.stats.add("dropped", "buffer_full")
            self._limited.log(logging.WARNING, "buffer_full", "event=buffer_full bytes=%d",
                              self.buffer.nbytes)
