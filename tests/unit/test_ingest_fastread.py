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
    body = struct.pack("!H", len(topic)) + topic.encode() + struct.pack("!H", mid) + payload
    n, length = len(body), b""
    while True:
        n, digit = divmod(n, 128)
        length += bytes([digit | (128 if n else 0)])
        if not n:
            break
    return bytes([0x32]) + length + body


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
