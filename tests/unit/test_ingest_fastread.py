"""`cloud.ingest.fastread.BufferedClient`: buffered reads and batched PUBACKs on a real
socket pair (paho's private methods it relies on are exercised here, not mocked)."""

from __future__ import annotations

import socket
import struct

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.ingest.fastread import BufferedClient


def _publish_qos1(topic: str, mid: int, payload: bytes) -> bytes:
    """An MQTT 3.1.1 QoS1 PUBLISH packet."""
    return _publish(topic.encode(), 1, mid, payload, None)


@pytest.fixture
def connected() -> tuple[BufferedClient, socket.socket]:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    c = BufferedClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv311,
                       manual_ack=True)
    c._sock = ours  # noqa: SLF001 - what connect() would have set
    c._state = mqtt._ConnectionState.MQTT_CS_CONNECTED  # noqa: SLF001
    yield c, broker
    c._sock_close()  # noqa: SLF001
    broker.close()


def test_every_packet_of_one_read_is_delivered(connected) -> None:
    c, broker = connected
    got: list[tuple[str, int, bytes]] = []
    c.on_message = lambda cl, u, m: got.append((m.topic, m.mid, m.payload))
    payloads = [bytes([i]) * (300 + 5000 * i) for i in range(6)]  # 1- and 2-byte lengths
    broker.sendall(b"".join(_publish_qos1("a/b", i + 1, p) for i, p in enumerate(payloads)))
    assert c.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [("a/b", i + 1, p) for i, p in enumerate(payloads)]
    assert c.buffered == 0


def test_a_packet_split_across_reads_is_delivered_once_complete(connected) -> None:
    c, broker = connected
    got: list[bytes] = []
    c.on_message = lambda cl, u, m: got.append(m.payload)
    pkt = _publish_qos1("a/b", 7, b"x" * 100_000)
    broker.sendall(pkt[:70_000])
    c.loop_read()
    assert got == []
    broker.sendall(pkt[70_000:])
    for _ in range(5):
        c.loop_read()
    assert got == [b"x" * 100_000]


def test_closing_the_socket_drops_buffered_bytes(connected) -> None:
    c, broker = connected
    c._rbuf, c._roff = b"stale", 0  # noqa: SLF001 - bytes of a connection that is gone
    c._sock_close()  # noqa: SLF001
    assert c.buffered == 0


def test_ack_many_writes_the_pubacks_in_order_in_one_packet(connected) -> None:
    c, broker = connected
    c.ack_many([5, 1, 65535])
    c.loop_write()
    assert broker.recv(100) == bytes.fromhex("40020005" "40020001" "4002ffff")
    c.ack_many([9])  # one id: paho's own ack, the same bytes
    c.loop_write()
    assert broker.recv(100) == bytes.fromhex("40020009")


def _publish(topic: bytes, qos: int, mid: int, payload: bytes, props: bytes | None,
             flags: int = 0) -> bytes:
    """A PUBLISH packet: MQTT v5 when `props` (its encoded property block) is given."""
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"")
    body += (props if props is not None else b"") + payload
    n, length = len(body), b""
    while True:
        n, digit = divmod(n, 128)
        length += bytes([digit | (128 if n else 0)])
        if not n:
            break
    return bytes([0x30 | qos << 1 | flags]) + length + body


def _received(client_class: type, protocol: int, stream: bytes, **opts: object) -> list[tuple]:
    """What `client_class` hands on_message for `stream`, fed through a real socket pair."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    c = client_class(CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol,
                     manual_ack=True)
    c._sock = ours  # noqa: SLF001 - what connect() would have set
    c._state = mqtt._ConnectionState.MQTT_CS_CONNECTED  # noqa: SLF001
    got: list[tuple] = []

    def on_message(cl: object, u: object, m: mqtt.MQTTMessage) -> None:
        props = m.properties.json() if m.properties is not None else None
        got.append((m.topic, m.mid, m.qos, m.dup, m.retain, bytes(m.payload), props))

    if opts.get("filtered"):
        c.message_callback_add("a/#", on_message)
    c.on_message = on_message
    try:
        broker.sendall(stream)
        for _ in range(20):
            c.loop_read()
    finally:
        c._sock_close()  # noqa: SLF001
        broker.close()
    return got


_V5_PACKETS = [
    _publish(b"a/b", 1, 7, b"x" * 20_000, b"\x00"),  # QoS1, no properties: the fast path
    _publish(b"a/c", 0, 0, b"qos0", b"\x00", flags=0x01),  # QoS0, retained
    _publish(b"a/d", 1, 9, b"dup", b"\x00", flags=0x08),
    _publish(b"a/e", 1, 10, b"props", b"\x05\x03\x00\x02hi"),  # a content type: paho's path
    _publish(b"a/f", 1, 11, b"", b"\x00"),  # empty payload
]


@pytest.mark.parametrize("filtered", [False, True])
def test_fast_path_gives_what_paho_gives_over_mqtt_v5(filtered: bool) -> None:
    stream = b"".join(_V5_PACKETS)
    ours = _received(BufferedClient, mqtt.MQTTv5, stream, filtered=filtered)
    assert ours == _received(mqtt.Client, mqtt.MQTTv5, stream, filtered=filtered)
    assert [m[0] for m in ours] == ["a/b", "a/c", "a/d", "a/e", "a/f"]
    assert ours[3][6] == {"ContentType": "hi"}


def test_fast_path_gives_what_paho_gives_over_mqtt_311() -> None:
    stream = b"".join([_publish(b"a/b", 1, 3, b"one", None), _publish(b"a/b", 0, 0, b"two", None),
                       _publish(b"", 1, 4, b"empty topic: refused", None)])
    ours = _received(BufferedClient, mqtt.MQTTv311, stream)
    assert ours == _received(mqtt.Client, mqtt.MQTTv311, stream)
    assert [m[5] for m in ours] == [b"one", b"two"]
