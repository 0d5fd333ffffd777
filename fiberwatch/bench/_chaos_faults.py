"""The cloud-side faults of `fiberwatch bench chaos`, each on its own site so the counts
stay apart: broker restart, influxd stopped, ingestion SIGKILL mid-stream, and one 30 MB
message on each topic. Each returns ``{"name", "events_published", "events_stored",
"lost", "duplicates", ...}``: published = events handed to the gateway's outbox, stored =
those of them in InfluxDB, duplicates = event points beyond one per event."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent import topics
from fiberwatch.bench._chaos_stack import Gateway, Stack, _wait

BIG = 30_000_000


def _result(name: str, stack: Stack, gw: Gateway, timeout: float = 180.0,
            **extra: Any) -> dict[str, Any]:
    want = set(gw.events)
    try:
        _wait(lambda: want <= set(stack.stored_events(gw.site)), timeout, f"{name} events")
    except RuntimeError:
        pass  # report what arrived
    stored = stack.stored_events(gw.site)
    got = set(stored) & want
    summaries = _settled(lambda: stack.stored_summaries(gw.site), gw.summaries)
    return {"name": name, "events_published": len(want), "events_stored": len(got),
            "lost": len(want - got), "duplicates": len(stored) - len(set(stored)),
            "summaries_published": gw.summaries, "summaries_stored": summaries,
            "summaries_lost": max(0, gw.summaries - summaries), **extra}


def _settled(count: Any, target: int, quiet_s: float = 5.0, timeout: float = 60.0) -> int:
    """`count()` once it reached `target` or stopped growing for `quiet_s`."""
    tick, deadline = threading.Event(), time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = int(count())
        if n >= target:
            return n
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return n
        tick.wait(0.25)
    return int(count())


def broker_restart(stack: Stack, root: Path) -> dict[str, Any]:
    with Gateway(root, stack.broker.port, "chaos-broker") as gw:
        gw.publish(3)
        stack.broker.stop()
        gw.publish(3)  # into the outbox: the broker is gone
        stack.broker.start()  # same port, same persistence directory
        gw.publish(3)
    return _result("broker_restart", stack, gw)


def influxd_stopped(stack: Stack, root: Path, outage_s: float) -> dict[str, Any]:
    with Gateway(root, stack.broker.port, "chaos-influxd") as gw:
        gw.publish(2)
        stack.influxd.stop()
        gw.publish(outage_s)
        stack.influxd.start()  # same port, same data directory
        gw.publish(2)
    return _result(f"influxd_stopped_{outage_s:g}s", stack, gw, outage_s=outage_s)


def ingest_sigkill(stack: Stack, root: Path) -> dict[str, Any]:
    with Gateway(root, stack.broker.port, "chaos-kill") as gw:
        gw.publish(3)
        stack.kill_ingest()
        gw.publish(2)
        stack.start_ingest()  # same client id: its persistent session waits at the broker
        gw.publish(3)
    return _result("ingest_sigkill", stack, gw)


def oversized_messages(stack: Stack, root: Path) -> dict[str, Any]:
    """One 30 MB message on each of a gateway's topics, between ordinary events."""
    site, gw_id = "chaos-big", "gw1"
    hostile = {"events": topics.events(site, gw_id),
               "features": topics.features(site, gw_id, "das"),
               "health": topics.health(site, gw_id), "model_state": topics.model_state(site, gw_id)}
    before = stack.health().get("dead_letters") or 0
    with Gateway(root, stack.broker.port, site, gw_id) as gw:
        gw.publish(2)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chaos-big-sender")
        c.connect("127.0.0.1", stack.broker.port)
        c.loop_start()
        try:
            for topic in hostile.values():
                payload = b'{"site": "' + b"x" * BIG + b'"}'
                c.publish(topic, payload, qos=1).wait_for_publish(120)
        finally:
            c.disconnect()
            c.loop_stop()
        gw.publish(2)
    result = _result("oversized_30mb_each_topic", stack, gw, topics=list(hostile),
                     message_bytes=BIG)
    try:
        _wait(lambda: (stack.health().get("dead_letters") or 0) >= before + len(hostile), 60,
              "the dead letters in /health")
    except RuntimeError:
        pass  # reported below as it is
    result["ingest_alive"] = stack.ingest is not None and stack.ingest.poll() is None
    result["dead_letters_in_health"] = stack.health().get("dead_letters")
    return result
