"""``GET /api/v1/live``: server-sent events for the dashboard (events, fleet, rounds, alerts).

On connect every topic is sent once, then a topic is sent again only when its data changed
(checked every ``LIVE_INTERVAL_S``). Reads are shared: however many dashboards are open,
each topic is read from the Store at most once per interval (`Snapshots`). A stream ends
after ``MAX_STREAM_S`` (the browser reconnects), so a server shutdown never waits on it for
long; sse-starlette sends keep-alive comments and stops streams on shutdown.

The dashboard reads it with ``fetch`` (EventSource cannot send the bearer token), so the
token never goes into a URL.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import SettingsDep, StoreDep, StoreLike, needs
from cloud.settings import CloudSettings

router = APIRouter(tags=["live"])
LIVE_INTERVAL_S = 1.0
MAX_STREAM_S = 300.0
PING_S = 15


class Snapshots:
    """Per-topic (data, digest) cached for `ttl_s`; one reader per topic at a time."""

    def __init__(self, ttl_s: float = LIVE_INTERVAL_S) -> None:
        self.ttl_s = ttl_s
        self._locks: dict[str, threading.Lock] = {}
        self._cache: dict[str, tuple[float, Any, str]] = {}
        self._guard = threading.Lock()

    def get(self, topic: str, read: Callable[[], Any]) -> tuple[Any, str]:
        with self._guard:
            lock = self._locks.setdefault(topic, threading.Lock())
        with lock:
            hit = self._cache.get(topic)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1], hit[2]
            data = read()
            digest = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
            self._cache[topic] = (time.monotonic(), data, digest)
            return data, digest


def _readers(request: Request, store: StoreLike, settings: CloudSettings
             ) -> dict[str, Callable[[], Any]]:
    readers: dict[str, Callable[[], Any]] = {
        "events": lambda: {"items": store.anomalies(limit=100)},
        "fleet": lambda: {"items": store.fleet()},
        "rounds": lambda: {"items": store.rounds(limit=50)},
    }
    if settings.alerting_config is not None:
        from cloud.api.routes.alerts import _alerter

        def alerts() -> Any:
            a = _alerter(request, settings)
            return {"alerts": {"items": a.state.alerts(limit=50), "configured": True,
                               "queued": a.state.queue_depth()},
                    "audit": {"items": a.state.audit(limit=20)}}

        readers["alerts"] = alerts
    return readers


def _snapshots(request: Request) -> Snapshots:
    snaps = getattr(request.app.state, "live_snapshots", None)
    if snaps is None:
        snaps = request.app.state.live_snapshots = Snapshots()
    return snaps


async def _stream(request: Request, readers: dict[str, Callable[[], Any]],
                  interval_s: float) -> AsyncIterator[ServerSentEvent]:
    snaps = _snapshots(request)
    sent: dict[str, str] = {}
    deadline = time.monotonic() + getattr(request.app.state, "live_max_stream_s", MAX_STREAM_S)
    n = 0
    while time.monotonic() < deadline:
        for topic, read in readers.items():
            try:
                data, digest = await run_in_threadpool(snaps.get, topic, read)
            except Exception as exc:  # storage down: say so, keep the stream, try again
                yield ServerSentEvent(orjson.dumps({"topic": topic, "detail": str(exc)[:300]})
                                      .decode(), event="error", sep="\n")
                continue
            if sent.get(topic) != digest:
                sent[topic] = digest
                n += 1
                body = {**data, "now_ns": time.time_ns()}
                yield ServerSentEvent(orjson.dumps(body).decode(), event=topic, id=str(n),
                                      sep="\n")
        await anyio.sleep(interval_s)


@router.get("/live", **needs("viewer"), response_class=EventSourceResponse)
async def live(request: Request, store: StoreDep, settings: SettingsDep,
               interval_s: Annotated[float, Query(ge=0.2, le=60)] = LIVE_INTERVAL_S
               ) -> EventSourceResponse:
    """Server-sent events: ``events``, ``fleet``, ``rounds`` and (when alerting is
    configured) ``alerts``, each sent on connect and whenever it changes; ``error`` when a
    read failed (the stream goes on). Needs ``Accept: text/event-stream``."""
    if "text/event-stream" not in request.headers.get("accept", ""):
        raise HTTPException(406, "send 'Accept: text/event-stream' (a stream of server-sent "
                                 "events that does not end)")
    return EventSourceResponse(_stream(request, _readers(request, store, settings), interval_s),
                               ping=PING_S, sep="\n", headers={"Cache-Control": "no-store",
                                                     "X-Accel-Buffering": "no"})
