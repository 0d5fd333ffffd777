"""Publish frames to MQTT: one connection per gateway, QoS 0, on ``topics.raw(...)``.

`FramePublisher` is one interrogator's connection. It bounds the frames queued inside paho
(QoS 0 has no broker-side flow control, so an unbounded producer would only grow memory)
and counts what was actually written to the socket. `publish_streams` merges several
gateways' frame streams in time order and sends them as fast as possible or paced in real
time (each frame leaves when its last sample is due), until done or `stop` is set.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from edge_agent import topics
from edge_agent.config import BrokerConfig
from edge_agent.mqtt_client import for_gateway, make_client
from sensors_sim.recording import peek

log = logging.getLogger(__name__)
#: a run whose first frame is this close to the wall clock is paced by the wall clock
LIVE_WINDOW_NS = 60 * 10**9


@dataclass
class PublishStats:
    """Frames and bytes written to the broker connection, and frames lost (not connected,
    or the connection dropped before they were written)."""

    frames: int = 0
    bytes: int = 0
    lost: int = 0
    by_stream: dict[str, int] = field(default_factory=dict)

    def add(self, other: PublishStats) -> None:
        self.frames += other.frames
        self.bytes += other.bytes
        self.lost += other.lost
        for k, v in other.by_stream.items():
            self.by_stream[k] = self.by_stream.get(k, 0) + v


class FramePublisher:
    """One gateway's MQTT connection publishing raw frames at QoS 0.

    Parameters
    ----------
    host, port : str, int
        Broker address.
    site, gateway : str
        Topic levels; frames go to ``topics.raw(site, gateway, stream)``.
    window : int
        Frames that may sit in paho's queue before `publish` waits for the socket.
    stop : threading.Event, optional
        Interrupts waits when set.
    broker : BrokerConfig, optional
        Login and TLS (`edge_agent.mqtt_client`); its ``{site}``/``{gateway}`` templates are
        filled for this gateway. Without it: plain and anonymous to `host`:`port`.
    """

    def __init__(self, host: str, port: int, site: str, gateway: str, *, window: int = 16,
                 stop: threading.Event | None = None, client_id: str = "",
                 broker: BrokerConfig | None = None) -> None:
        self.host, self.port, self.site, self.gateway = host, port, site, gateway
        self._topics = {s: topics.raw(site, gateway, s) for s in topics.STREAMS}
        self.window = max(1, window)
        self.stop = stop or threading.Event()
        self.stats = PublishStats()
        self._pending: deque[tuple[mqtt.MQTTMessageInfo, int, str]] = deque()
        self._connected = threading.Event()
        self.disconnected = threading.Event()  # set while the connection is down
        self._closing = False
        self._refused: str | None = None
        cfg = for_gateway(broker, site, gateway) if broker else BrokerConfig(host=host, port=port)
        self._client = make_client(cfg, client_id or f"sim-{site}-{gateway}", protocol="v311",
                                   reconnect_delay_s=(0.1, 5))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object,
                    reason: object, props: object) -> None:
        if not getattr(reason, "is_failure", False):
            self.disconnected.clear()
            self._connected.set()
            log.info("event=connected site=%s gateway=%s", self.site, self.gateway)
        else:
            self._refused = str(reason)
            log.warning("event=refused site=%s gateway=%s reason=%s", self.site, self.gateway,
                        reason)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason: object, props: object) -> None:
        self._connected.clear()
        self.disconnected.set()
        level = logging.INFO if self._closing else logging.WARNING
        log.log(level, "event=disconnected site=%s gateway=%s reason=%s",
                self.site, self.gateway, reason)

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection (and it has not dropped)."""
        return self._connected.is_set()

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and start the network thread; raise `ConnectionError` on failure."""
        where = f"{self._client.host}:{self._client.port}"
        try:
            self._client.reconnect()  # synchronous: a refused TCP or TLS connection raises here
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {where}: {exc}") from None
        self._client.loop_start()
        deadline = time.monotonic() + timeout
        while not self._connected.wait(0.05):
            if self._refused is not None or time.monotonic() > deadline:
                self._client.disconnect()
                self._client.loop_stop()
                why = f"refused: {self._refused}" if self._refused else f"no CONNACK in {timeout} s"
                raise ConnectionError(f"{where} {why} (site {self.site}, gateway {self.gateway})")

    def publish(self, stream: str, frame: bytes) -> bool:
        """Queue one frame; False if it was lost at once (not connected)."""
        while len(self._pending) >= self.window and not self.stop.is_set():
            self._reap(block=True)
        if not self._connected.is_set():
            self.stats.lost += 1
            return False
        info = self._client.publish(self._topics[stream], frame, qos=0)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.stats.lost += 1
            return False
        self._pending.append((info, len(frame), stream))
        self._reap(block=False)
        return True

    def _reap(self, block: bool) -> None:
        """Account for frames written to the socket; with `block`, wait for the oldest."""
        while self._pending:
            info, nbytes, stream = self._pending[0]
            try:
                if block:
                    block = False
                    info.wait_for_publish(0.2)
                done = info.is_published()
            except RuntimeError:  # connection lost before it was written
                done, nbytes = True, -1
            if not done:
                return
            self._pending.popleft()
            if nbytes < 0 or info.rc != 0:
                self.stats.lost += 1
            else:
                self.stats.frames += 1
                self.stats.bytes += nbytes
                self.stats.by_stream[stream] = self.stats.by_stream.get(stream, 0) + 1

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued frame is written (or `timeout`)."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            self._reap(block=True)

    def close(self, timeout: float = 10.0) -> None:
        """Flush, disconnect and stop the network thread."""
        self.flush(timeout)
        self.stats.lost += len(self._pending)
        self._pending.clear()
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> FramePublisher:
        self.connect()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Source:
    """One gateway's frames: ``(stream, frame_bytes)`` in sending order."""

    site: str
    gateway: str
    frames: Iterable[tuple[str, bytes]]


def _timed(i: int, src: Source) -> Iterator[tuple[int, int, int, str, bytes]]:
    for seq, (stream, frame) in enumerate(src.frames):
        _kind, _seq, t0_ns, end_ns = peek(frame)
        yield end_ns, i, seq, stream, frame


def publish_streams(
    sources: Sequence[Source], host: str, port: int, *, realtime: bool,
    stop: threading.Event | None = None,
    on_frame: Callable[[int, str, bytes], None] | None = None,
    clock: Callable[[], float] = time.monotonic, connect_timeout: float = 10.0,
    wall_ns: Callable[[], int] = time.time_ns, broker: BrokerConfig | None = None,
) -> PublishStats:
    """Send every source's frames, merged by frame end time, each gateway on its own
    connection; return the totals.

    Parameters
    ----------
    realtime : bool
        Pace by the frames' timestamps (a frame leaves when its last sample is due: by the
        wall clock for a live run, whose first frame lies within `LIVE_WINDOW_NS` of now,
        else relative to the first frame); otherwise as fast as the broker accepts.
    stop : threading.Event, optional
        Set it (e.g. from a signal handler) to stop cleanly after the current frame.
    on_frame : callable, optional
        ``on_frame(source_index, stream, frame)`` before each frame is sent (recording).
    broker : BrokerConfig, optional
        Login and TLS, ``{site}``/``{gateway}`` filled per gateway (`FramePublisher`)."""
    stop, started, total = stop or threading.Event(), [], PublishStats()
    pubs = [FramePublisher(host, port, x.site, x.gateway, stop=stop, broker=broker) for x in
            sources]
    try:
        for p in pubs:
            p.connect(connect_timeout)
            started.append(p)
        merged = heapq.merge(*(_timed(i, s) for i, s in enumerate(sources)))
        wall0 = base = None
        warned = -math.inf
        for end_ns, i, _n, stream, frame in merged:
            if stop.is_set():
                break
            if realtime:
                if base is None:
                    base, wall0 = peek(frame)[2], clock()
                    if abs(base - wall_ns()) < LIVE_WINDOW_NS:
                        # a live run: frames leave when the wall clock reaches their end,
                        # as an interrogator's do, however late this process started
                        base, wall0 = wall_ns(), clock()
                assert wall0 is not None
                delay = wall0 + (end_ns - base) / 1e9 - clock()
                if delay > 0 and stop.wait(delay):
                    break
                if delay < -1.0 and clock() - warned > 10.0:
                    warned = clock()
                    log.warning("event=behind_realtime lag_s=%.1f", -delay)
            if on_frame is not None:
                on_frame(i, stream, frame)
            pubs[i].publish(stream, frame)
    finally:
        for p in started:
            p.close()
            total.add(p.stats)
    log.info("event=published frames=%d bytes=%d lost=%d", total.frames, total.bytes, total.lost)
    return total
