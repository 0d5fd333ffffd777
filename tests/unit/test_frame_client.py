"""`edge_agent.frame_client.FrameClient` decodes a PUBLISH as paho does, without the copies.

Each packet is handed to both clients the way paho's read loop does (``_in_packet`` filled,
then ``_handle_publish``), so these tests also fail if the private paho names it relies on
go away or change meaning.
"""

from __future__ import annotations

import struct
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.frame_client import FrameClient


def _publish_body(topic: bytes, payload: bytes, v5: bool, props: Properties | None = None,
                  mid: int | None = None) -> bytearray:
    body = struct.pack("!H", len(topic)) + topic
    if mid is not None:
        body += struct.pack("!H", mid)
    if v5:
        body += (props or Properties(PacketTypes.PUBLISH)).pack()
    return bytearray(body + payload)


def _deliver(cls: type[mqtt.Client], header: int, body: bytearray, v5: bool,
             rc: int = mqtt.MQTT_ERR_SUCCESS) -> mqtt.MQTTMessage:
    client = cls(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="t",
                 protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    got: list[mqtt.MQTTMessage] = []
    client.on_message = lambda _c, _u, m: got.append(m)
    client._in_packet = {"command": header, "packet": body}  # what _packet_read leaves
    assert client._handle_publish() == rc
    assert len(got) == 1
    return got[0]


def _fields(m: mqtt.MQTTMessage) -> tuple[Any, ...]:
    props = None if m.properties is None else m.properties.json()
    return (m.topic, bytes(m.payload), m.qos, m.retain, m.dup, props)


@pytest.mark.parametrize("v5", [True, False])
@pytest.mark.parametrize("flags", [0x00, 0x01, 0x08, 0x09])  # retain, dup
def test_a_qos0_publish_decodes_like_paho_and_its_payload_is_a_view(v5: bool,
                                                                    flags: int) -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("k", "v")
    props.PayloadFormatIndicator = 0
    payload = bytes(range(256)) * 1601
    body = _publish_body(b"fiberwatch/v1/s/g/raw/das", payload, v5, props)
    ours = _deliver(FrameClient, 0x30 | flags, bytearray(body), v5)
    theirs = _deliver(mqtt.Client, 0x30 | flags, bytearray(body), v5)
    assert _fields(ours) == _fields(theirs)
    assert isinstance(ours.payload, memoryview) and len(ours.payload) == len(payload)


def test_qos1_takes_pahos_own_path() -> None:
    body = _publish_body(b"a/b", b"xyz", True, mid=7)
    m = _deliver(FrameClient, 0x32, body, True, rc=mqtt.MQTT_ERR_NO_CONN)  # its PUBACK
    assert isinstance(m.payload, bytes) and m.payload == b"xyz" and m.mid == 7


@pytest.mark.parametrize(("body", "v5"), [
    (bytearray(b"\x00"), True),  # shorter than the topic length
    (bytearray(b"\x00\x09abc"), True),  # topic past the end
    (bytearray(b"\x00\x03abc\xff\xff\xff\xff\x01"), True),  # properties length: 5 bytes
    (bytearray(b"\x00\x03abc\x7f"), True),  # properties past the end
    (bytearray(b"\x00\x00payload"), False),  # empty topic in MQTT 3.1.1
])
def test_malformed_packets_are_malformed(body: bytearray, v5: bool) -> None:
    with pytest.raises(MalformedPacket):
        _deliver(FrameClient, 0x30, body, v5)
