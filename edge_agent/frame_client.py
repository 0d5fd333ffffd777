"""A paho client that hands QoS 0 PUBLISH payloads over without copying them.

paho 2.x decodes a PUBLISH by ``struct.unpack``-ing its body twice (topic length, then topic
and rest) and, with MQTT v5, slicing off the properties: three copies of every payload.
For a 2,048-channel DAS frame (~410 kB, 20 of them a second per stream) that is ~25 MB/s
of copying on the thread that reads the socket. `FrameClient` decodes the same fields
(topic, v5 properties, flags) and gives the message a ``memoryview`` of paho's packet
buffer as its payload; paho starts a fresh buffer for the next packet, so the view stays
valid as long as the message is referenced. QoS 1 and 2 packets take paho's own path.

It overrides ``Client._handle_publish`` and reads ``_in_packet``, ``_protocol`` and
``_handle_on_message``: private paho 2.x names (`tests/unit/test_frame_client.py` fails if
they go away or change meaning).
"""

from __future__ import annotations

import struct
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_U16 = struct.Struct("!H")


def _varint(buf: bytearray, off: int) -> tuple[int, int]:
    """MQTT variable byte integer at `off`: (value, bytes used)."""
    value, mult = 0, 1
    for i in range(4):
        if off + i >= len(buf):
            break
        b = buf[off + i]
        value += (b & 127) * mult
        if not b & 128:
            return value, i + 1
        mult *= 128
    raise MalformedPacket("bad variable byte integer in PUBLISH properties")


class FrameClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with copy-free QoS 0 payloads (see the module)."""

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        if header & 0x06:  # QoS 1 or 2: acknowledgements and their state are paho's
            return super()._handle_publish()
        packet: bytearray = self._in_packet["packet"]
        if len(packet) < 2:
            raise MalformedPacket("PUBLISH shorter than its topic length")
        (slen,) = _U16.unpack_from(packet, 0)
        off = 2 + slen
        if off > len(packet):
            raise MalformedPacket("PUBLISH topic runs past the packet")
        view = memoryview(packet)
        message = mqtt.MQTTMessage(mid=0, topic=bytes(view[2:off]))
        if self._protocol == mqtt.MQTTv5:
            size, used = _varint(packet, off)
            end = off + used + size
            if end > len(packet):
                raise MalformedPacket("PUBLISH properties run past the packet")
            message.properties = Properties(PacketTypes.PUBLISH)
            message.properties.unpack(bytes(view[off:end]))
            off = end
        elif slen == 0:
            raise MalformedPacket("topic can't be empty in MQTTv3")
        message.dup, message.qos, message.retain = bool(header & 0x08), 0, bool(header & 0x01)
        message.payload = view[off:]  # type: ignore[assignment]  # bytes-like, no copy
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
