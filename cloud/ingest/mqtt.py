"""The MQTT subscriber: a persistent MQTT v5 session, manual acknowledgements (with a
shared group, see `connections`: a second, clean session for the shared feature stream).

``on_connect`` subscribes (so a reconnect resubscribes); ``on_message`` only parses and
enqueues. QoS1 messages are acknowledged by the writer once stored (`Subscriber.ack`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import cast

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.ingest.buffer import Buffer, Item
from cloud.ingest.config import IngestSettings
from cloud.ingest.deadletter import DeadLetters
from cloud.ingest.fastread import BufferedClient
from cloud.ingest.limits import check_size, check_time
from cloud.ingest.parse import FeaturesRecord, Malformed, parse
from cloud.ingest.spool import Position, Spool
from cloud.ingest.stats import IngestStats, RateLimitedLog
from edge_agent import topics
from edge_agent.mqtt_client import make_client

log = logging.getLogger(__name__)
SUBSCRIPTIONS = (topics.ALL_EVENTS, topics.ALL_FEATURES, topics.ALL_HEALTH,
                 topics.ALL_MODEL_STATE)
PRIMARY_ONLY = (topics.ALL_EVENTS, topics.ALL_HEALTH, topics.ALL_MODEL_STATE)
#: added to the message ids of a process's second connection (its shared feature one), so
#: that one `ack` function serves both (MQTT message ids are 16-bit)
MID_OFFSET = 1 << 16
_KIND = {"events": "event", "health": "health", "model_state": "model_state"}


@dataclass(frozen=True, slots=True)
class Connection:
    """One MQTT connection of an ingestion process: its client id, topic filters, whether
    its session persists, and the offset of its message ids."""

    client_id: str
    filters: tuple[str, ...]
    persistent: bool
    mid_offset: int = 0


def connections(settings: IngestSettings) -> list[Connection]:
    """The connections of one process.

    Without `IngestSettings.share_group`: one persistent session taking everything. With it,
    the shared feature subscription always sits in a clean session of its own: Mosquitto 2.0
    keeps handing a shared group's messages to a member whose persistent session is offline
    (measured: QoS0 ones are lost, QoS1 ones wait for it), whereas a clean session leaves
    the group when it disconnects. The primary keeps events, health and model state in its
    persistent session, so they wait at the broker while it is down.
    """
    cid = settings.mqtt_client_id
    if settings.share_group is None:
        return [Connection(cid, (topics.ALL_FEATURES, *PRIMARY_ONLY), True)]
    shared = (f"$share/{settings.share_group}/{topics.ALL_FEATURES}",)
    if not settings.primary:
        return [Connection(cid, shared, False)]
    if not settings.features:  # one login, one connection: for brokers that use the login
        return [Connection(cid, PRIMARY_ONLY, True)]  # as client id
    return [Connection(cid, PRIMARY_ONLY, True),
            Connection(f"{cid}-features", shared, False, MID_OFFSET)]


def subscriptions(settings: IngestSettings) -> list[str]:
    """Every topic filter of one process, over its connections."""
    return [f for c in connections(settings) for f in c.filters]


class Subscriber:
    """Receive gateways' messages on one `Connection` into `buffer`."""

    def __init__(self, settings: IngestSettings, buffer: Buffer, stats: IngestStats,
                 conn: Connection | None = None, dead: DeadLetters | None = None,
                 spool: Spool | None = None) -> None:
        self.s = settings
        self.conn = conn = conn or connections(settings)[0]
        self.dead = dead
        self.spool = spool
        self.buffer = buffer
        self.stats = stats
        self.accepting = True  # False while stopping: messages stay unacked at the broker
        self.connected = False
        self.subscribed = threading.Event()  # set once the broker granted the subscriptions
        self._limited = RateLimitedLog(log)
        self.v5 = settings.mqtt_protocol == "5"
        c = make_client(settings.broker_config, conn.client_id,
                        protocol="v5" if self.v5 else "v311", clean=not conn.persistent,
                        session_expiry_s=settings.session_expiry_s if conn.persistent else 0,
                        reconnect_delay_s=(1, 30),
                        manual_ack=True, receive_maximum=settings.receive_maximum,
                        client_class=BufferedClient)
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
        self.client.ack(mid - self.conn.mid_offset, 1)

    def ack_many(self, mids: list[int]) -> None:
        off = self.conn.mid_offset
        cast(BufferedClient, self.client).ack_many([m - off for m in mids])

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.warning("event=mqtt_connect_failed reason=%r", str(reason))
            return
        self.connected = True
        log.info("event=mqtt_connected session_present=%s", flags.session_present)
        client.subscribe([(t, 1) for t in self.conn.filters])

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
        # paho delivers bytes; ids of a second connection are offset (see `connections`)
        self.handle(msg.topic, cast(bytes, msg.payload), msg.qos,
                    msg.mid + self.conn.mid_offset, time.time_ns())

    def replay(self) -> int:
        """Put the spooled QoS0 messages of an earlier run (killed before writing them)
        into the buffer, oldest first; returns how many."""
        if self.spool is None:
            return 0
        n = 0
        for topic, payload, received_ns, pos in self.spool.replay():
            self.handle(topic, payload, 0, 0, received_ns, spooled=pos)
            n += 1
        if n:
            self.stats.add("received", "replayed", n)
            log.info("event=spool_replayed messages=%d", n)
        return n

    def handle(self, topic: str, payload: bytes, qos: int, mid: int, received_ns: int,
               spooled: Position | None = None) -> None:
        """Check, parse, spool (QoS0) and buffer one message."""
        try:
            check_size(topic, len(payload), self.s)  # before anything parses it
            record = parse(topic, payload)
            check_time(record, received_ns, self.s)
        except Malformed as exc:
            self.stats.add("malformed", exc.reason)
            if exc.reason.endswith(":too_large") and self.dead is not None:
                self.dead.add(exc.reason, topic, payload)
            self._limited.log(logging.WARNING, exc.reason, "event=malformed reason=%s topic=%s "
                              "detail=%r", exc.reason, topic, exc.detail[:200])
            record = None
        except Exception:  # noqa: BLE001 - a parser bug must not end ingestion: count, log
            self.stats.add("malformed", "internal_error")
            self._limited.log(logging.ERROR, "internal", "event=parse_crashed topic=%s",
                              topic, exc_info=True)
            record = None
        if record is None:  # acked in order with the rest, after the batch before it
            if qos > 0:
                self.buffer.put(Item(None, received_ns, mid, qos, 0, 0))
            return
        if isinstance(record, FeaturesRecord):
            kind, nbytes, lines = "features", record.nbytes, 1
        else:
            kind = _KIND.get(topic.rsplit("/", 1)[-1], "other")
            nbytes, lines = len(payload) + 200, 2
        if qos == 0 and spooled is None and self.spool is not None:
            spooled = self.spool.append(topic, payload, received_ns)  # survives a SIGKILL
        if self.buffer.put(Item(record, received_ns, mid, qos, nbytes, lines, spooled)):
            self.stats.add("received", kind)
        else:
            self.stats.add("dropped", "buffer_full")
            self._limited.log(logging.WARNING, "buffer_full", "event=buffer_full bytes=%d",
                              self.buffer.nbytes)


class Subscribers:
    """Every `Subscriber` of one process (`connections`), started, acked and stopped as one."""

    def __init__(self, settings: IngestSettings, buffer: Buffer, stats: IngestStats,
                 dead: DeadLetters | None = None, spool: Spool | None = None) -> None:
        self.parts = [Subscriber(settings, buffer, stats, c, dead, spool)
                      for c in connections(settings)]

    def replay(self) -> int:
        """The spooled summaries of a killed run into the buffer (see `Subscriber.replay`)."""
        return self.parts[0].replay()

    def start(self) -> None:
        for p in self.parts:
            p.start()

    def wait_subscribed(self, timeout: float) -> bool:
        return all(p.subscribed.wait(timeout) for p in self.parts)

    def ack(self, mid: int) -> None:
        """Acknowledge on the connection the message came in on (by its id's offset)."""
        part = next((p for p in reversed(self.parts) if mid >= p.conn.mid_offset),
                    self.parts[0])
        part.ack(mid)

    def ack_many(self, mids: list[int]) -> None:
        """`ack` of many, in order: one write per connection (`BufferedClient.ack_many`)."""
        if len(self.parts) == 1:
            self.parts[0].ack_many(mids)
            return
        for p in reversed(self.parts):  # each message on the connection its id says
            mine = [m for m in mids if m >= p.conn.mid_offset]
            mids = [m for m in mids if m < p.conn.mid_offset]
            p.ack_many(mine)

    def stop_accepting(self) -> None:
        for p in self.parts:
            p.stop_accepting()

    def stop(self) -> None:
        for p in self.parts:
            p.stop()
