"""The uplink's sender thread (`UplinkSender`): drains the outbox, summaries and retained slots.

The one thread that publishes for `edge_agent.uplink.Uplink` (which describes the delivery
rules). paho's network thread only hands it notes (`note`) and the pipeline only queues work,
so the outbox cursor, the in-flight window and the acks live on this thread.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edge_agent.store_forward import Outbox
from edge_agent.uplink_retained import RetainedSlot

# one logger for the whole uplink: operators (and tests) filter on "edge_agent.uplink"
log = logging.getLogger("edge_agent.uplink")

_SUMMARY_INFLIGHT = 16

Publish = Callable[[str, bytes, int, bool], int | None]
"""``publish(topic, payload, qos, retain)``: the message id, or None if it was not sent."""


class UplinkSender:
    """Publish outbox rows, summaries and retained slots through ``publish`` on one thread.

    Parameters
    ----------
    outbox : Outbox
        Durable store of events; a row is acknowledged (deleted) after its PUBACK.
    publish : Publish
        Sends one message through the uplink's client.
    retained : dict of str to str
        Name -> topic of each latest-wins retained slot.
    window, summary_queue, rejected_retry_s
        As in `edge_agent.uplink.Uplink`.
    """

    def __init__(self, outbox: Outbox, publish: Publish, *, retained: dict[str, str],
                 window: int, summary_queue: int, rejected_retry_s: float) -> None:
        self._outbox, self._publish = outbox, publish
        self._window = window
        self._rejected_retry_s = rejected_retry_s
        self._notes: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._summaries: deque[tuple[str, bytes]] = deque(maxlen=summary_queue)
        self._retained = {name: RetainedSlot(topic) for name, topic in retained.items()}
        self._thread: threading.Thread | None = None
        # sender-thread state
        self._up = False
        self._cursor = 0
        self._rescan_at: float | None = None
        self._recovered_max = 0
        self._inflight: dict[int, int] = {}  # outbox id -> mid
        self._by_mid: dict[int, tuple[str, int]] = {}  # mid -> (kind, outbox id)
        self._summary_outstanding = 0
        self._n = dict.fromkeys(("published", "acked", "redelivered", "rejected",
                                 "summaries_sent", "dropped_summaries", "model_packages",
                                 "labels"), 0)

    # -- control and hand-over (any thread) --------------------------------------------------
    def start(self, connect: Callable[[], object]) -> None:
        """Note the outbox's last row (rows up to it count as redelivered), call ``connect``
        (paho's network loop), then start the thread; a sender starts once."""
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError("an Uplink starts once; make a new one")
        self._recovered_max = self._outbox.max_id()
        connect()
        self._thread = threading.Thread(target=self._run, name="uplink-sender")
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop and join the thread; return whether it was running."""
        if self._thread is None:
            return False
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def note(self, *note: Any) -> None:
        """From paho's network thread: ``("up",)``, ``("down",)`` or
        ``("pub", mid, failed, reason)``."""
        self._notes.put(note)
        self._wake.set()

    def wake(self) -> None:
        """New rows are in the outbox."""
        self._wake.set()

    def queue_summary(self, topic: str, payload: bytes) -> None:
        """Queue a QoS0 message; never blocks (drops the oldest when full)."""
        with self._lock:
            if len(self._summaries) == self._summaries.maxlen:
                self._n["dropped_summaries"] += 1
            self._summaries.append((topic, payload))
        self._wake.set()

    def set_retained(self, name: str, payload: bytes) -> None:
        """Make ``payload`` the next message of retained slot ``name`` (latest wins)."""
        with self._lock:
            self._retained[name].latest = payload
        self._wake.set()

    def count(self, name: str) -> None:
        with self._lock:
            self._n[name] += 1

    def counters(self) -> dict[str, Any]:
        """The counters (see `edge_agent.uplink.Uplink.stats`) and ``inflight``."""
        with self._lock:
            out: dict[str, Any] = dict(self._n)
            out["inflight"] = len(self._inflight)
        return out

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until the outbox is empty, no event is in flight and every retained slot is
        acknowledged (or ``timeout``); return whether so."""
        def done() -> bool:
            return not self._inflight and self._outbox.depth() == 0 and all(
                r.idle for r in self._retained.values())

        with self._idle:
            return self._idle.wait_for(done, timeout)

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            timeout = None if self._rescan_at is None else self._rescan_at - time.monotonic()
            self._wake.wait(None if timeout is None else max(timeout, 0.0))
            self._wake.clear()
            try:
                self._step()
            except sqlite3.OperationalError as exc:  # e.g. disk full
                log.error("uplink outbox error, retrying in 1 s: %s", exc)
                self._cursor = 0  # rows whose ack failed are sent again
                self._stop.wait(1.0)
                self._wake.set()
            if self._stop.is_set():
                return
            with self._idle:
                self._idle.notify_all()

    def _step(self) -> None:
        self._process_notes()
        if self._up and not self._stop.is_set():
            if self._rescan_at is not None and time.monotonic() >= self._rescan_at:
                self._cursor, self._rescan_at = 0, None
            self._send_retained()
            self._send_summaries()
            self._send_events()

    def _process_notes(self) -> None:
        acked: list[int] = []
        while True:
            try:
                note = self._notes.get_nowait()
            except queue.Empty:
                break
            if note[0] == "up":
                self._went_up()
            elif note[0] == "down":
                self._up = False
            else:
                self._published(note[1], note[2], note[3], acked)
        if acked:
            with self._lock:  # counted first: flush() returns once the depth is 0
                self._n["acked"] += len(acked)
            self._outbox.ack_many(acked)

    def _went_up(self) -> None:
        self._up, self._cursor = True, 0
        for mid in [m for m, (kind, _) in self._by_mid.items() if kind == "summary"]:
            del self._by_mid[mid]  # QoS0 packets queued before the drop are lost
        self._summary_outstanding = 0
        with self._lock:
            self._n["redelivered"] += len(self._inflight)  # paho resends them with DUP
            for slot in self._retained.values():
                slot.rearm()

    def _published(self, mid: int, failed: bool, reason: str, acked: list[int]) -> None:
        owner = self._by_mid.pop(mid, None)
        if owner is None:
            return
        kind, item_id = owner
        if kind == "summary":
            self._summary_outstanding -= 1
        elif kind != "event":
            with self._lock:
                self._retained[kind].mid = None
            if failed:
                log.warning("uplink %s refused by broker reason=%s", kind, reason)
        elif failed:
            with self._lock:
                del self._inflight[item_id]
                self._n["rejected"] += 1
            self._rescan_at = time.monotonic() + self._rejected_retry_s
            log.warning("uplink event refused by broker id=%d reason=%s", item_id, reason)
        else:
            with self._lock:
                del self._inflight[item_id]
            acked.append(item_id)

    def _send_retained(self) -> None:
        for name, slot in self._retained.items():
            with self._lock:
                payload = slot.take()
            if payload is None:
                continue
            mid = self._publish(slot.topic, payload, 1, True)
            with self._lock:
                slot.mid = mid
            if mid is not None:
                self._by_mid[mid] = (name, 0)

    def _send_summaries(self) -> None:
        while self._summary_outstanding < _SUMMARY_INFLIGHT:
            with self._lock:
                if not self._summaries:
                    return
                topic, payload = self._summaries.popleft()
            mid = self._publish(topic, payload, 0, False)
            with self._lock:
                self._n["summaries_sent" if mid is not None else "dropped_summaries"] += 1
            if mid is not None:
                self._by_mid[mid] = ("summary", 0)
                self._summary_outstanding += 1

    def _send_events(self) -> None:
        free = self._window - len(self._inflight)
        if free <= 0:
            return
        rows = self._outbox.pending(free + len(self._inflight), after=self._cursor)
        for item_id, topic, payload in rows:
            if item_id in self._inflight:  # carried over a reconnect: paho resends it
                self._cursor = max(self._cursor, item_id)
                continue
            if free == 0:
                return
            mid = self._publish(topic, payload, 1, False)
            if mid is None:
                return
            self._cursor, free = max(self._cursor, item_id), free - 1
            self._by_mid[mid] = ("event", item_id)
            with self._lock:
                self._inflight[item_id] = mid
                self._n["published"] += 1
                self._n["redelivered"] += item_id <= self._recovered_max
