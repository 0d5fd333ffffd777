# ruff: noqa: S608 - InfluxQL here is built from constants of this module
"""The full-run-only parts of `fiberwatch bench cloud`: the rejected one-point-per-channel
layout, and an influxd outage during ingestion that must lose nothing."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud import codec, schema
from cloud.influx import InfluxClient
from edge_agent import topics
from edge_agent.events import Event, event_id
from fiberwatch.bench._cloud_common import _MARK, GROUPS, S, _count, _summaries, _wait
from fiberwatch.services import Influxd, Mosquitto


def _per_channel_layout(influx: InfluxClient, seconds: int) -> dict[str, Any]:
    """The rejected layout: one point per channel and second; write rate and a window."""
    end = time.time_ns() // S * S
    start = end - seconds * S
    rng = np.random.default_rng(3)
    lines = []
    for k in range(seconds):
        v = np.round(rng.gamma(2.0, 0.3, GROUPS), 4).tolist()
        lines += [codec.line("features_pc", {"site": "alt", "gateway": "q1", "stream": "das",
                                             "ch": str(c)},
                             {"score": v[c], "energy": 1.0, "threshold": 1.5}, start + k * S)
                  for c in range(GROUPS)]
    n = len(lines)
    t0 = time.perf_counter()
    for k in range(0, n, 5000):
        influx.write(schema.DB, lines[k:k + 5000], rp=schema.RP_RAW, timeout=120)
    write_s = time.perf_counter() - t0
    t = time.perf_counter()
    influx.query(f'SELECT max("score") FROM "fiberwatch"."raw"."features_pc" WHERE '
                 f"\"site\" = 'alt' AND time >= {start} AND time < {end} "
                 'GROUP BY time(2s), "ch"',
                 timeout=600)
    return {"span_s": seconds, "points": n, "points_per_s": round(n / write_s),
            "channel_values_per_s": round(n * 3 / write_s),
            "window_query_ms": round((time.perf_counter() - t) * 1000, 1)}


def _outage(broker: Mosquitto, server: Influxd, influx: InfluxClient, outage_s: float) -> dict:
    """Events (QoS1) and summaries (QoS0) published at 20/s each across an influxd outage."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-outage")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    rng, tpl = np.random.default_rng(5), None
    tpl = _summaries(rng, "gw9", variants=1, site="outage")[0]
    t_first, sent, tick = time.time_ns() // S * S - 600 * S, 0, threading.Event()

    def send(seconds: float) -> None:
        nonlocal sent
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            t = t_first + sent * S
            e = Event(id=event_id("outage", "gw9", "das", t, 0), site="outage", gateway="gw9",
                      stream="das", start_ns=t, end_ns=t + S, ch_start=0, ch_end=3,
                      dist_start_m=0.0, dist_end_m=4.0, peak_score=2.0, mean_score=1.0,
                      threshold=1.0, severity="low", class_hint="unknown", n_windows=1,
                      model_version="1.0.0", model_hash="h", detected_ns=t + S)
            c.publish(topics.events("outage", "gw9"), e.to_json(), qos=1)
            c.publish(topics.features("outage", "gw9", "das"),
                      tpl.replace(b"%d" % _MARK, b"%d" % t), qos=0)
            sent += 1
            tick.wait(0.05)

    send(2.0)
    server.stop()
    send(outage_s)
    server.start()
    send(2.0)
    def stored() -> tuple[int, int]:
        rows = influx.rows('SELECT count("end_ns") FROM "fiberwatch"."events"."event" '
                           "WHERE \"site\" = 'outage'")
        return (rows[0]["count"] if rows else 0), _count(influx, "raw", "features", "outage")

    try:  # both kinds: a batch writes its events before its (much larger) summaries
        _wait(lambda: min(stored()) >= sent, 120, "everything after the outage")
    except RuntimeError:
        pass  # report what arrived
    c.disconnect()
    c.loop_stop()
    events, summaries = stored()
    return {"outage_s": outage_s, "events_published": sent, "events_stored": events,
            "summaries_published": sent, "summaries_stored": summaries}
