"""`bench cloud`'s bare publisher: hand-framed QoS1 PUBLISH packets that a real Mosquitto
takes, routes and acknowledges, byte for byte."""

from __future__ import annotations

import queue
import socket
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fiberwatch.bench._mqtt_raw import RawPublisher, _varint
from fiberwatch.services import Mosquitto

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("n", "encoded"), [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01")])
def test_remaining_length_is_mqtts_variable_byte_integer(n: int, encoded: bytes) -> None:
    assert _varint(n) == encoded


def test_the_broker_routes_and_acknowledges_every_message(mosquitto: Mosquitto) -> None:
    got: queue.Queue[tuple[str, bytes, int]] = queue.Queue()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-pub-test-sub")
    sub.on_message = lambda _c, _u, m: got.put((m.topic, m.payload, m.qos))
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("fw/#", qos=1)
    sub.loop_start()
    try:
        sub.publish("fw/ready", b"", qos=1).wait_for_publish(10)
        assert got.get(timeout=10)[0] == "fw/ready"
        payloads = [b"", b"x" * 127, bytes(range(256)) * 1200]  # 0 B, 127 B, 300 KB
        pub = RawPublisher(mosquitto.port, "raw-pub-test")
        for k, p in enumerate(payloads):
            pub.publish(f"fw/t{k}", p)
        pub.close()  # raises unless one PUBACK per message came back
        assert pub.sent == 3
        received = [got.get(timeout=10) for _ in payloads]
        assert received == [(f"fw/t{k}", p, 1) for k, p in enumerate(payloads)]
    finally:
        sub.disconnect()
        sub.loop_stop()


@pytest.mark.parametrize(("reply", "error"), [(b"\x20\x02\x00\x05", "refused"),
                                              (b"", "closed")])
def test_a_refused_or_dropped_connection_is_an_error(reply: bytes, error: str) -> None:
    """A broker that answers CONNECT with "not authorised" (5), or hangs up."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        def serve() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(reply)

        t = threading.Thread(target=serve)
        t.start()
        with pytest.raises(RuntimeError, match=error):
            RawPublisher(srv.getsockname()[1], "raw-pub-test")
        t.join(10)
