# ruff: noqa: S608 - InfluxQL here is built from constants of this module
"""`fiberwatch bench cloud`: MQTT -> InfluxDB ingestion rate and history-window latency.

Real Mosquitto and influxd in a temp dir; ingestion runs as its own process
(``python -m cloud.ingest``), exactly as deployed.

(1) Three simulated gateways publish 1,024-group feature summaries (QoS1, so the broker
    queues what ingestion has not taken yet) through a bare publisher (`_mqtt_raw`: the
    gateways' CPU is not the cloud's; paho's took ~0.8 of a core of the two during each
    phase, measured); the figure is stored summaries per second
    from the first publish until the last one is in InfluxDB. A summary is one InfluxDB
    point holding 1,024 groups x (score, energy, threshold). The peer writes the same lines
    (built by the same code) straight to the same influxd in 1,000-line batches from one
    thread. Goal: ingestion / peer >= 0.6.
    Pairs are on equal footing: each phase starts only once influxd, Mosquitto and
    ingestion are idle (`_settle`: influxd goes on snapshotting and compacting for up to
    ~0.5 s of CPU after a 9,000-point phase, measured; without the wait that work was
    charged to whichever phase came next, always ingestion, since the peer went first in
    every pair), and the order alternates (peer first, then ingestion first, ...), so
    neither side always writes into the shard the other has just grown; and each phase
    starts on empty raw and history shards (`_drop_shards`), not on one that every phase
    before it grew (and that influxd compacts as it grows, during whichever phase): without
    the drop a run's three pairs drifted down (0.61, 0.47, 0.42), with it they held
    (0.36, 0.43, 0.40; both measured on a loaded 2-core machine). One unmeasured
    phase of each kind comes first: a fresh influxd (new shards, a small Go heap) spent
    ~0.14-0.18 ms of CPU per point in the first phases against ~0.09-0.12 later (measured),
    and that fell on the peer, first in the first pair: the old first pair's ratio (0.64
    against 0.39 and 0.35 after it) came mostly from that warm-up.
    Summaries are packed (schema 2, as gateways send them); one more run with JSON summaries
    (schema 1, gateways not yet upgraded) gives the CPU of the old format in the same run.
(3) Scale-out (`_cloud_scale`): 1, 2 and 3 workers on one shared subscription, each
    summary stored once, none lost, none twice.
(2) One hour x 1,024 channels at 1 s is written directly, then `Store.window` asks ~20 times
    for all of it at <= 2,000 columns. Goal: p95 <= 300 ms.
Full runs add the rejected layout (one point per channel) for comparison, and a 30 s
influxd outage during ingestion that must lose nothing.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud import codec, schema
from cloud.influx import InfluxClient
from cloud.store import Store
from edge_agent import topics
from edge_agent.events import Event, event_id
from fiberwatch.bench._cloud_common import (
    _MARK,
    GATEWAYS,
    GROUPS,
    P95_GOAL_MS,
    RATIO_GOAL,
    S,
    _all_stored,
    _count,
    _cpu_s,
    _summaries,
    _wait,
)
from fiberwatch.bench._cloud_extra import _outage, _per_channel_layout
from fiberwatch.bench._cloud_scale import scale_out
from fiberwatch.bench._mqtt_raw import RawPublisher
from fiberwatch.services import Influxd, Mosquitto


def _ingest_rate(broker: Mosquitto, influx: InfluxClient, n_per_gw: int,
                 pids: dict[str, int | None], site: str = "bench",
                 packed: bool = True) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    templates = {g: _summaries(rng, g, site=site, packed=packed) for g in GATEWAYS}
    t_first = time.time_ns() // S * S - n_per_gw * S
    clients = [RawPublisher(broker.port, f"bench-{g}") for g in GATEWAYS]
    topic = {g: topics.features(site, g, "das") for g in GATEWAYS}
    total = n_per_gw * len(GATEWAYS)
    nbytes = 0
    cpu0 = {name: _cpu_s(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    for k in range(n_per_gw):
        for g, c in zip(GATEWAYS, clients, strict=True):
            tpl = templates[g][k % 4]
            payload = tpl.replace(b"%d" % _MARK, b"%d" % (t_first + k * S))
            nbytes += len(payload)
            c.publish(topic[g], payload)
    published = time.perf_counter() - t0
    t_last = t_first + (n_per_gw - 1) * S
    _wait(lambda: _all_stored(influx, site, t_last, total), 600, "summaries stored")
    seconds = time.perf_counter() - t0
    cpu = {f"{name}_cpu_ms_per_summary": round((_cpu_s(pid) - cpu0[name]) / total * 1000, 3)
           for name, pid in pids.items()}
    for c in clients:
        c.close()  # every PUBACK came: the broker took every summary
    rate = total / seconds
    return {"gateways": len(GATEWAYS), "groups": GROUPS, "summaries": total,
            "format": "packed (schema 2)" if packed else "JSON (schema 1)",
            "payload_bytes_mean": round(nbytes / total), "publish_seconds": round(published, 2),
            "seconds": round(seconds, 2), "summaries_per_s": round(rate, 1),
            "influx_points_per_s": round(rate, 1), "channel_values_per_s": round(rate * GROUPS * 3),
            "history_points": _count(influx, "history", "features_10s", site), **cpu}


_ORDERS = (("peer", "ingest"), ("ingest", "peer"), ("peer", "ingest"))


def _pairs(broker: Mosquitto, influx: InfluxClient, n_per_gw: int, pids: dict[str, int | None],
           count: int) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[float]]:
    """`count` (ingestion, peer) pairs, each phase started once every process is idle (see
    `_settle`), the order alternating (`_ORDERS`); also how long each settling took."""
    _ingest_rate(broker, influx, n_per_gw, pids, site="warmup")  # unmeasured: see the module
    _peer_write(influx, n_per_gw, pids["influxd"], site="warmup-peer")
    pairs, settle = [], []
    for r in range(count):
        out: dict[str, dict[str, Any]] = {}
        for what in _ORDERS[r % len(_ORDERS)]:
            _drop_shards(influx)
            settle.append(_settle(pids))
            out[what] = (_peer_write(influx, n_per_gw, pids["influxd"], site=f"peer{r}")
                         if what == "peer" else
                         _ingest_rate(broker, influx, n_per_gw, pids, site=f"bench{r}"))
        pairs.append((out["ingest"], out["peer"]))
    return pairs, settle


def _drop_shards(influx: InfluxClient) -> None:
    """Drop the raw and history shards: the next phase writes into empty ones, as the one
    before it did (not into a shard grown, and compacted, by all the phases before)."""
    for row in influx.rows("SHOW SHARDS"):
        if row["database"] == schema.DB and row["retention_policy"] in (schema.RP_RAW,
                                                                         schema.RP_HISTORY):
            influx.query(f"DROP SHARD {int(row['id'])}")


def _settle(pids: dict[str, int | None], window_s: float = 0.5, idle_cpu_s: float = 0.02,
            timeout_s: float = 60.0) -> float:
    """Wait until `pids` together used at most `idle_cpu_s` CPU in a `window_s` window
    (influxd's snapshots and compactions of the previous phase have ended); returns the
    seconds waited (`timeout_s` at most: then the phase starts anyway)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        c0 = sum(_cpu_s(p) for p in pids.values())
        time.sleep(window_s)
        if sum(_cpu_s(p) for p in pids.values()) - c0 <= idle_cpu_s:
            break
    return round(time.perf_counter() - t0, 1)


def _feature_lines(site: str, gateway: str, t_first: int, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [codec.features_line(
        schema.FEATURES, site=site, gateway=gateway, stream="das", t_ns=t_first + k * S,
        ch_start=0, group_size=1, score=np.round(rng.gamma(2.0, 0.3, GROUPS), 4),
        energy=np.round(rng.normal(-2.0, 0.3, GROUPS), 4), threshold=np.full(GROUPS, 1.5),
        model_version="1.0.0", flagged=2) for k in range(n)]


def _peer_write(influx: InfluxClient, n_per_gw: int, influxd_pid: int | None,
                site: str = "peer") -> dict[str, Any]:
    t_first = time.time_ns() // S * S - n_per_gw * S
    lines = [ln for i, g in enumerate(GATEWAYS)
             for ln in _feature_lines(site, g, t_first, n_per_gw, seed=i)]
    cpu0 = _cpu_s(influxd_pid)
    t0 = time.perf_counter()
    for k in range(0, len(lines), 1000):
        influx.write(schema.DB, lines[k:k + 1000], rp=schema.RP_RAW, timeout=120)
    seconds = time.perf_counter() - t0
    influxd_cpu = (_cpu_s(influxd_pid) - cpu0) / len(lines) * 1000
    rate = len(lines) / seconds
    return {"points": len(lines), "batch_lines": 1000, "seconds": round(seconds, 2),
            "points_per_s": round(rate, 1), "channel_values_per_s": round(rate * GROUPS * 3),
            "line_bytes_mean": round(sum(map(len, lines)) / len(lines)),
            "influxd_cpu_ms_per_point": round(influxd_cpu, 3)}


def _window_latency(influx: InfluxClient, queries: int) -> dict[str, Any]:
    end = time.time_ns() // S * S
    start = end - 3600 * S
    lines = _feature_lines("hist", "q1", start, 3600, seed=9)
    for k in range(0, len(lines), 600):
        influx.write(schema.DB, lines[k:k + 600], rp=schema.RP_RAW, timeout=120)
    store = Store(influx)
    fetch: list[float] = []
    real = influx.query_table

    def timed(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            fetch.append((time.perf_counter() - t) * 1000)

    influx.query_table = timed  # type: ignore[method-assign]
    total: list[float] = []
    try:
        for _ in range(queries):
            t = time.perf_counter()
            w = store.window(site="hist", gateway="q1", stream="das", start_ns=start,
                             end_ns=end, ch_start=0, ch_end=GROUPS - 1, max_times=2000)
            total.append((time.perf_counter() - t) * 1000)
    finally:
        del influx.query_table
    filled = sum(v is not None for row in w["values"] for v in row)
    p95 = float(np.percentile(total, 95))
    return {"span_s": 3600, "channels": GROUPS, "max_times": 2000, "columns": len(w["times_ns"]),
            "rows": len(w["values"]), "cells_with_data": filled, "queries": queries,
            "p50_ms": round(statistics.median(total), 1), "p95_ms": round(p95, 1),
            "max_ms": round(max(total), 1), "samples_ms": [round(t, 1) for t in total],
            "influx_fetch_p50_ms": round(statistics.median(fetch), 1),
            "goal_p95_ms": P95_GOAL_MS, "meets_goal": p95 <= P95_GOAL_MS}


def run(quick: bool, out_dir: Path) -> dict[str, Any]:
    """Both parts (plus, in full runs, the per-channel layout and a 30 s outage)."""
    del out_dir  # no plots: the figures are in the returned dict
    n_per_gw = 400 if quick else 3000
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fw-bench-cloud-") as tmp, \
            Mosquitto(Path(tmp) / "mosquitto") as broker, Influxd(Path(tmp) / "influxd") as server:
        influx = InfluxClient(server.url, timeout=30)
        schema.ensure_schema(influx)
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud.ingest", "--mqtt-port", str(broker.port),
             "--influx-url", server.url, "--log-level", "INFO"],
            stderr=open(Path(tmp) / "ingest.log", "wb"))  # noqa: SIM115
        try:
            _probe_ready(broker, influx)
            pids = {"ingest": proc.pid, "influxd": server.pid, "mosquitto": broker.pid}
            pairs, settle = _pairs(broker, influx, n_per_gw, pids, 2 if quick else 3)
            win = _window_latency(influx, 10 if quick else 20)
            extra: dict[str, Any] = {"ingest_json_v1": _ingest_rate(  # gateways not upgraded
                broker, influx, n_per_gw, pids, site="json", packed=False)}
            if not quick:
                extra["per_channel_layout"] = _per_channel_layout(influx, 300)
                extra["durability"] = _outage(broker, server, influx, 30.0)
        finally:
            proc.terminate()
            code = proc.wait(60)
        extra["scale_out"] = scale_out(broker, server, influx, n_per_gw, Path(tmp), _ingest_rate)
        log = (Path(tmp) / "ingest.log").read_text(errors="replace")
    final = [ln for ln in log.splitlines() if "event=ingest_stopped" in ln]
    ratios = [i["summaries_per_s"] / p["points_per_s"] for i, p in pairs]
    ratio = statistics.median(ratios)
    ingest, peer = sorted(pairs, key=lambda ip: ip[0]["summaries_per_s"] / ip[1]["points_per_s"]
                          )[len(pairs) // 2]  # the median pair (the upper one of two)
    return {"benchmark": "cloud", "quick": quick, "ingest": ingest, "peer_raw_write": peer,
            "ratio_ingest_over_peer": round(ratio, 3), "ratio_goal": RATIO_GOAL,
            "ratios_per_pair": [round(r, 3) for r in ratios],
            "pair_order": [list(o) for o in _ORDERS[:len(pairs)]], "settle_s": settle,
            "ratio_meets_goal": ratio >= RATIO_GOAL, "window": win, **extra,
            "ingest_exit_code": code,
            "ingest_final_counters": final[-1].split("event=ingest_stopped ", 1)[-1] if final
            else None,
            "ingest_warnings": [ln for ln in log.splitlines() if " WARNING " in ln
                                or " ERROR " in ln][-5:],
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}


def _probe_ready(broker: Mosquitto, influx: InfluxClient) -> None:
    """Publish a probe event until ingestion has stored one (it has subscribed)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    t = time.time_ns()
    e = Event(id=event_id("probe", "p", "das", t, 0), site="probe", gateway="p", stream="das",
              start_ns=t, end_ns=t, ch_start=0, ch_end=0, dist_start_m=0.0, dist_end_m=0.0,
              peak_score=1.0, mean_score=1.0, threshold=1.0, severity="low",
              class_hint="unknown", n_windows=1, model_version="0", model_hash="0",
              detected_ns=t)
    store, tick, deadline = Store(influx), threading.Event(), time.monotonic() + 60
    while store.anomaly(codec.cloud_event_id("probe", "p", e.id)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("bench cloud: ingestion did not start within 60 s")
        c.publish(topics.events("probe", "p"), e.to_json(), qos=1)
        tick.wait(0.25)
    c.disconnect()
    c.loop_stop()


def to_markdown(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md section."""
    i, p, w = result["ingest"], result["peer_raw_write"], result["window"]
    k = lambda x: f"{x / 1e3:,.0f} k"  # noqa: E731
    lines = [
        "## cloud: MQTT -> InfluxDB ingestion and history windows",
        "",
        f"{i['gateways']} gateways x {i['summaries'] // i['gateways']} feature summaries of "
        f"{i['groups']} channel groups (score, energy, threshold; "
        f"{i.get('format', 'JSON (schema 1)')} ~{i['payload_bytes_mean'] / 1024:.0f} KiB each) "
        "through Mosquitto into influxd, "
        "ingestion in its own process" + (" (quick run)." if result.get("quick") else ".")
        + " The gateways publish QoS1 through a bare hand-framed publisher: their CPU is not"
        " the cloud's.",
        "One InfluxDB point per summary; channel values = points x 1,024 x 3.",
        "",
        "| writer | InfluxDB points/s | channel values/s |",
        "|---|---|---|",
        f"| ingestion (MQTT -> parse -> line protocol -> /write) | {i['influx_points_per_s']:,.0f}"
        f" | {k(i['channel_values_per_s'])} |",
        f"| peer: same lines, 1,000-line batches, one thread | {p['points_per_s']:,.0f} | "
        f"{k(p['channel_values_per_s'])} |",
        "",
        f"Ingestion / peer: **{result['ratio_ingest_over_peer']:.2f}** (goal >= "
        f"{result['ratio_goal']}: " + ("met" if result["ratio_meets_goal"] else "**not met**")
        + ")" + (f"; median of {len(result['ratios_per_pair'])} interleaved pairs: "
                 + ", ".join(f"{r:.2f}" for r in result["ratios_per_pair"])
                 + " (the table shows the median pair)" if result.get("ratios_per_pair")
                 else "") + ".",
        "",
        f"CPU per summary (less sensitive to other load than the rates): ingestion process "
        f"{i.get('ingest_cpu_ms_per_summary', 0):.2f} ms, influxd "
        f"{i.get('influxd_cpu_ms_per_summary', 0):.2f} ms, Mosquitto "
        f"{i.get('mosquitto_cpu_ms_per_summary', 0):.2f} ms; influxd for the peer's points "
        f"{p.get('influxd_cpu_ms_per_point', 0):.2f} ms each.",
        "",
        f"History window: {w['span_s'] // 3600} h x {w['channels']} channels at 1 s, "
        f"{w['columns']} columns (<= {w['max_times']}), {w['queries']} calls of `Store.window`:"
        f" p50 {w['p50_ms']:.0f} ms, p95 **{w['p95_ms']:.0f} ms**, max {w['max_ms']:.0f} ms "
        f"(InfluxDB fetch p50 {w['influx_fetch_p50_ms']:.0f} ms; goal p95 <= "
        f"{w['goal_p95_ms']:.0f} ms: " + ("met" if w["meets_goal"] else "**not met**") + ").",
    ]
    lines += _format_lines(result) + _scale_lines(result.get("scale_out"))
    if "per_channel_layout" in result:
        a = result["per_channel_layout"]
        lines += ["", f"Rejected layout, one point per channel: {a['points_per_s']:,} points/s "
                  f"({k(a['channel_values_per_s'])} channel values/s); a {a['span_s'] // 60}-minute"
                  f" window took {a['window_query_ms'] / 1000:.1f} s."]
    if "durability" in result:
        d = result["durability"]
        lines += ["", f"influxd stopped for {d['outage_s']:.0f} s during ingestion: events "
                  f"{d['events_stored']}/{d['events_published']} stored, summaries "
                  f"{d['summaries_stored']}/{d['summaries_published']}."]
    la = result.get("load_average_before_after")
    if la:
        lines += ["", f"Load average (1 min) before/after: {la[0]} / {la[1]}."]
    return "\n".join(lines)


def _format_lines(result: dict[str, Any]) -> list[str]:
    j = result.get("ingest_json_v1")
    if not j:
        return []
    i = result["ingest"]
    return ["", f"Same run, JSON summaries (schema 1, gateways not yet upgraded; "
            f"~{j['payload_bytes_mean'] / 1024:.0f} KiB each): {j['summaries_per_s']:,.0f} "
            f"summaries/s, ingestion CPU {j.get('ingest_cpu_ms_per_summary', 0):.2f} ms per "
            f"summary against {i.get('ingest_cpu_ms_per_summary', 0):.2f} ms packed."]


def _scale_lines(so: dict[str, Any] | None) -> list[str]:
    if not so:
        return []
    rows = [f"| {w} | {r:,.0f} | {c:.2f} | {', '.join(f'{x:.2f}' for x in share)} |"
            for w, r, c, share in zip(so["workers"], so["rate_per_worker_count"],
                                      so["cpu_ms_per_summary_per_worker_count"],
                                      so["per_worker_share"], strict=True)]
    return ["", "Scale-out: N ingestion processes on one MQTT shared subscription "
            "(`fiberwatch cloud ingest --workers N`), same broker and influxd, "
            f"{so['gateways']} gateways publishing.", "",
            "| workers | summaries/s | ingestion CPU ms per summary (all workers) | "
            "share per worker |", "|---|---|---|---|", *rows, "",
            f"Published {so['messages_published']:,}, stored {so['messages_stored']:,}, "
            f"lost {so['lost']}, duplicates {so['duplicates']} (over all worker counts)."]
