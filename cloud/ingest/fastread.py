"""A paho client that reads the socket in 64 KiB chunks instead of 3-4 reads per message.

paho 2.x reads each incoming packet with a ``recv(1)`` for its command byte, one per
remaining-length byte, then one for the body: four system calls and as many trips through
its read loop for every feature summary. `BufferedClient` serves those reads from one large
``recv`` (measured on a 12 KB summary stream: the receiving thread's CPU per message drops
from ~50 to ~37 us). paho only calls ``loop_read`` when ``select`` says the socket is
readable, so `loop_read` goes on while the buffer holds bytes (a complete packet there
would otherwise wait for the next network read). The buffer belongs to one connection:
it is emptied whenever paho closes the socket.

`ack_many` sends the QoS1 acknowledgements of a written batch as one write: paho's ``ack``
queues one 4-byte PUBACK at a time and wakes its network thread for each (a socket-pair
write, a ``select`` round and a ``send`` per message). The PUBACKs are the same bytes
``ack`` would send (``!BBH``: type, remaining length 2, id: MQTT 3.1.1, and MQTT v5 with
reason Success), one after the other in one buffer.

`_packet_read` and `_handle_publish` take a fast path for the common packet: one already
whole in the buffer is cut out of it at once (paho: a ``recv`` per header byte, the body
appended to a ``bytearray``; one cut by the end of the last read is completed by one
more read first), and a PUBLISH at QoS 0/1 with a valid UTF-8 topic and no
MQTT v5 properties becomes its `MQTTMessage` without paho's per-message ``Properties``
object (~40 attribute look-ups), three copies of the payload by ``struct.unpack`` and the
topic-filter trie walk (no ``message_callback_add`` here). The message, the callbacks'
exception handling and the (automatic) PUBACK are paho's; anything else (QoS 2,
properties, a bad topic, a short packet, debug logging on, filtered callbacks) takes
paho's own path. Measured on a socket pair with 12 KB packed summaries over MQTT v5: paho's
receive path from ~30 to ~12 us per message (`tests/unit/test_ingest_fastread.py` checks
both paths give the same messages).

It overrides ``Client._sock_recv``, ``_sock_close``, ``_packet_read`` and
``_handle_publish`` and calls ``_packet_queue`` and ``_packet_handle``, private paho 2.x
methods (`tests/unit/test_ingest_fastread.py` fails if they go away or change meaning).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

CHUNK = 64 << 10
_PUBACK = struct.Struct("!BBH")
_PUBACK_TYPE = PacketTypes.PUBACK << 4
_PUBLISH = 0x30
#: the properties of every fast-path v5 message (it had none): one shared, empty instance
NO_PROPERTIES = Properties(PacketTypes.PUBLISH)
_OK = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


class BufferedClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with buffered socket reads (see the module)."""

    _rbuf: bytes = b""
    _roff: int = 0
    _filtered: bool = False  # a message_callback_add was made: paho's own delivery

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._roff >= len(self._rbuf):
            data = super()._sock_recv(max(bufsize, CHUNK))  # BlockingIOError passes through
            if len(data) <= bufsize:
                return data
            self._rbuf, self._roff = data, 0
        off = self._roff
        self._roff = off + bufsize
        return self._rbuf[off:off + bufsize]

    def _sock_close(self) -> None:
        self._rbuf, self._roff = b"", 0
        super()._sock_close()

    @property
    def buffered(self) -> int:
        """Bytes read from the socket and not yet handed to paho."""
        return max(len(self._rbuf) - self._roff, 0)

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self.buffered and self._sock:
            rc = super().loop_read(max_packets)
        return rc

    def ack_many(self, mids: Sequence[int]) -> None:
        """PUBACK each of `mids` (QoS1 messages received with ``manual_ack``), in order,
        in one buffer and one wake-up of the network thread."""
        if not mids:
            return
        if len(mids) == 1:
            self.ack(mids[0], 1)
            return
        blob = b"".join([_PUBACK.pack(_PUBACK_TYPE, 2, m) for m in mids])
        self._packet_queue(_PUBACK_TYPE, blob, 0, 0)

    def message_callback_add(self, sub: str,
                             callback: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None]
                             ) -> None:
        self._filtered = True
        super().message_callback_add(sub, callback)

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        """A packet already whole in the buffer, handled at once; else paho's reads."""
        if self._in_packet["command"]:
            return super()._packet_read()  # paho is midway through a packet
        whole = _whole_packet(self._rbuf, self._roff)
        if whole is None and self._fill():
            whole = _whole_packet(self._rbuf, self._roff)
        if whole is None:
            return super()._packet_read()
        buf, off = self._rbuf, self._roff
        start, end = whole
        self._roff = end
        ip = self._in_packet
        # paho's decoders take bytes as well as the bytearray its own reads build
        ip["command"], ip["packet"] = buf[off], cast(bytearray, buf[start:end])
        ip["have_remaining"], ip["remaining_length"], ip["to_process"] = 1, end - start, 0
        try:
            rc = self._packet_handle()
        except mqtt.MalformedPacket as exc:
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [],
                           "remaining_mult": 1, "remaining_length": 0,
                           "packet": bytearray(b""), "to_process": 0, "pos": 0}
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        return rc

    def _fill(self) -> bool:
        """Append one socket read to the bytes left in the buffer (a packet cut by the end
        of the last read); False if the socket had nothing (paho's path takes over)."""
        try:
            data = super()._sock_recv(CHUNK)
        except OSError:  # BlockingIOError (nothing yet) and the rest: paho's path decides
            return False
        if not data:
            return False  # closed: paho's own read sees it again and reports it
        self._rbuf, self._roff = self._rbuf[self._roff:] + data, 0
        return True

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        message = self._fast_message() if self._plain_delivery() else None
        if message is None:
            return super()._handle_publish()
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                try:
                    on_message(self, self._userdata, message)
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                    if not self.suppress_exceptions:
                        raise
        if message.qos == 1 and not self._manual_ack:
            return self._send_puback(message.mid)
        return _OK

    def _plain_delivery(self) -> bool:
        """No filtered callbacks and no debug logging: what the fast path leaves out."""
        log: Any = self._logger
        return not (self._filtered or self.on_log is not None
                    or (log is not None and log.isEnabledFor(logging.DEBUG)))

    def _fast_message(self) -> mqtt.MQTTMessage | None:
        """The `MQTTMessage` of the PUBLISH in ``_in_packet``, or None for paho's path."""
        cmd, pkt = self._in_packet["command"], self._in_packet["packet"]
        qos = (cmd & 0x06) >> 1
        v5 = self._protocol == mqtt.MQTTv5
        if qos > 1 or len(pkt) < 2:
            return None
        slen = (pkt[0] << 8) | pkt[1]
        pos = 2 + slen + (2 if qos else 0)
        if len(pkt) < pos + v5 or (v5 and pkt[pos] != 0) or (not v5 and slen == 0):
            return None  # short, or v5 properties present, or an empty v3 topic
        topic = bytes(pkt[2:2 + slen])
        try:
            topic.decode("utf-8")
        except UnicodeDecodeError:
            return None
        m = mqtt.MQTTMessage(mid=(pkt[pos - 2] << 8) | pkt[pos - 1] if qos else 0, topic=topic)
        m.dup, m.qos, m.retain = bool(cmd & 0x08), qos, bool(cmd & 0x01)
        m.properties = NO_PROPERTIES if v5 else None
        m.payload = bytes(pkt[pos + v5:])
        m.timestamp = mqtt.time_func()
        return m


def _whole_packet(buf: bytes, off: int) -> tuple[int, int] | None:
    """(body start, end) of the packet at `off` if `buf` holds all of it, else None."""
    n = len(buf)
    length, mult, i = 0, 1, off + 1
    while i < n and i - off <= 4:
        b = buf[i]
        length += (b & 127) * mult
        mult <<= 7
        i += 1
        if not b & 128:
            return (i, i + length) if i + length <= n else None
    return None
