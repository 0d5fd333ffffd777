"""The agent's two threads of its own: `Processor` (the pipeline) and `ModelWorker`.

Both follow one shape: ``start()`` spawns the thread, ``stop()`` sets an Event and joins.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_agent.metrics import Metrics, RateLimitedLog
from edge_agent.mqtt_source import FrameQueue
from edge_agent.pipeline import StreamPipeline
from edge_agent.types import RawMessage

log = logging.getLogger(__name__)


class Processor:
    """The processing thread: queue -> `StreamPipeline.handle`, plus periodic ticks.

    Parameters
    ----------
    frames : FrameQueue
    routes : dict
        Raw topic -> the pipeline of that stream.
    metrics : Metrics
    tick_s : float
        How often `StreamPipeline.tick` runs (summaries, stale events).
    drain_s : float
        At `stop`, at most this long is spent on frames still queued.

    Notes
    -----
    A frame whose processing raises is counted (``internal_error``) and logged with its
    traceback (rate-limited), and the thread goes on with the next one: one bad frame or a
    bug in a rare path must not end detection on the whole fiber. This is the agent's
    per-message boundary, like a server's per-request one.
    """

    def __init__(self, frames: FrameQueue, routes: dict[str, StreamPipeline], metrics: Metrics,
                 *, tick_s: float = 0.1, drain_s: float = 5.0) -> None:
        self.frames, self.routes, self.metrics = frames, routes, metrics
        self.tick_s, self.drain_s = tick_s, drain_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rlog = RateLimitedLog(log)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edge-processor")
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking new work, drain what is queued (bounded), flush pipelines, join."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("event=processor_join_timeout timeout_s=%.0f", timeout)
            self._thread = None

    def _run(self) -> None:
        next_tick = time.monotonic() + self.tick_s
        while not self._stop.is_set():
            msg = self.frames.get(timeout=self.tick_s)
            if msg is not None:
                self._handle(msg)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self.tick_s
                for p in self.routes.values():
                    self._guard("tick", p.tick)
        deadline = time.monotonic() + self.drain_s
        while time.monotonic() < deadline:
            msg = self.frames.get_nowait()
            if msg is None:
                break
            self._handle(msg)
        for p in self.routes.values():
            self._guard("flush", p.flush)

    def _handle(self, msg: RawMessage) -> None:
        p = self.routes.get(msg.topic)
        if p is None:
            self.metrics.drop("unknown_stream")
            self._rlog.warning("unknown_stream", "event=frame_dropped reason=unknown_stream "
                               "topic=%s", msg.topic)
            return
        self._guard("frame", lambda: p.handle(msg))

    def _guard(self, what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the per-message boundary, see Notes
            self.metrics.drop("internal_error")
            self._rlog.warning(f"internal_error:{what}",
                               "event=internal_error stage=%s error=%s", what,
                               type(exc).__name__, exc_info=True)


class ModelWorker:
    """Hands model packages to the model slots off the MQTT thread.

    `submit` (any thread, cheap) keeps only the newest package. The worker routes it to the
    stream named in its (not yet verified) manifest, or to every stream if that cannot be
    read, and calls ``slot.offer(package, recent_rows)`` there; verification is the slot's.
    A stream that has not produced rows yet is retried every `retry_s`.

    Parameters
    ----------
    targets : dict
        Stream kind -> ``(slot, recent_rows)`` where ``recent_rows()`` returns (N, D) rows.
    on_change : callable, optional
        Called after every offer (the agent republishes the model state).
    """

    def __init__(self, targets: dict[str, tuple[Any, Callable[[], np.ndarray]]], *,
                 on_change: Callable[[], None] | None = None, retry_s: float = 1.0) -> None:
        self.targets = targets
        self.on_change = on_change
        self.retry_s = retry_s
        self._q: queue.Queue[bytes] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.offered = 0

    def submit(self, package: bytes) -> None:
        """Queue a package, replacing one not yet taken (newest wins)."""
        while True:
            try:
                self._q.put_nowait(package)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    pass

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edge-model-worker")
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                package = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            for kind in route(package, list(self.targets)):
                slot, rows_fn = self.targets[kind]
                rows = rows_fn()
                while len(rows) == 0 and not self._stop.wait(self.retry_s):
                    rows = rows_fn()
                if self._stop.is_set():
                    return
                try:
                    slot.offer(package, rows)
                except Exception:  # noqa: BLE001 - a bad package must not end model updates
                    log.warning("event=model_offer_failed stream=%s", kind, exc_info=True)
                self.offered += 1
                if self.on_change is not None:
                    self.on_change()


def route(package: bytes, kinds: list[str]) -> list[str]:
    """The stream kinds a package is meant for, from its manifest's ``stream`` field."""
    from edge_agent.package import PackageError, parse_manifest, split

    try:
        stream = parse_manifest(split(package)[1]).get("stream")
    except PackageError:
        return kinds
    return [stream] if stream in kinds else kinds
