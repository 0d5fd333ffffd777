"""A bare MQTT 3.1.1 QoS1 publisher for `bench cloud`: PUBLISH packets framed by hand and
written straight to the socket.

The cloud bench measures ingestion, not the gateways: in a deployment each gateway
publishes from its own machine, and the bench's three simulated gateways share the two
cores with Mosquitto, ingestion and influxd. Through paho they took ~0.09 ms of CPU per
summary (~0.8 of a core during the first half of each ingestion phase, measured), as much
as ingestion itself. Framing a packet here costs a header and one ``sendall``; the peer's
lines are likewise built before its clock starts.

The broker's PUBACKs are read once everything is sent (`close`): every message must have
been taken, or the phase fails.
"""

from __future__ import annotations

import socket
import struct

_CONNACK, _PUBACK = 0x20, 0x40


def _varint(n: int) -> bytes:
    """MQTT's variable byte integer (remaining length)."""
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id: str, keepalive_s: int = 60) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, no will, no login (the bench's dev broker)."""
    body = _utf8("MQTT") + bytes((4, 0x02)) + struct.pack("!H", keepalive_s) + _utf8(client_id)
    return b"\x10" + _varint(len(body)) + body


def publish_header(topic: str, mid: int, payload_len: int) -> bytes:
    """The bytes of a QoS1 PUBLISH before its payload."""
    var = _utf8(topic) + struct.pack("!H", mid)
    return b"\x32" + _varint(len(var) + payload_len) + var


class RawPublisher:
    """One connection publishing QoS1 messages; `close` waits for every PUBACK."""

    def __init__(self, port: int, client_id: str, host: str = "127.0.0.1",
                 timeout_s: float = 30.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(connect_packet(client_id))
        ack = self._recv_exact(4)
        if ack[0] != _CONNACK or ack[3] != 0:
            raise RuntimeError(f"bench cloud: broker refused {client_id!r}: CONNACK {ack!r}")
        self.sent = 0

    def publish(self, topic: str, payload: bytes) -> None:
        self.sent += 1
        mid = (self.sent - 1) % 65535 + 1
        self._sock.sendall(publish_header(topic, mid, len(payload)) + payload)

    def close(self) -> None:
        """Read one PUBACK per message sent (the broker took them all), then disconnect."""
        try:
            acks = self._recv_exact(4 * self.sent)
            bad = [k for k in range(0, len(acks), 4) if acks[k] != _PUBACK or acks[k + 1] != 2]
            if bad:
                raise RuntimeError(f"bench cloud: {len(bad)} of {self.sent} PUBACKs malformed")
            self._sock.sendall(b"\xe0\x00")  # DISCONNECT
        finally:
            self._sock.close()

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise RuntimeError("bench cloud: the broker closed the connection")
            buf += chunk
        return bytes(buf)
