"""`fiberwatch bench cloud`, scale-out part: 1, 2, 3 ingestion workers on one broker.

Each worker count runs ``python -m cloud.ingest --workers W`` (features through one MQTT
shared subscription, `cloud.ingest.workers`) against the same Mosquitto and influxd, the
same three gateways publish the same summaries, and every worker writes its counters at exit
(``--stats-file``). Lost = published - stored; duplicates = received by the workers - stored
(a summary given to two workers would be received twice but stored once: InfluxDB keeps one
point per series and time).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.influx import InfluxClient
from fiberwatch.bench._cloud_common import GATEWAYS, _count, _wait
from fiberwatch.services import Influxd, Mosquitto


def _start(broker: Mosquitto, server: Influxd, workers: int, tmp: Path
           ) -> tuple[subprocess.Popen[bytes], Path, Path]:
    log, stats = tmp / f"ingest-w{workers}.log", tmp / f"stats-w{workers}.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud.ingest", "--workers", str(workers), "--mqtt-port",
         str(broker.port), "--influx-url", server.url, "--client-id", f"bench-w{workers}",
         "--stats-file", str(stats), "--log-level", "INFO"],
        stderr=open(log, "wb"))  # noqa: SIM115 - closed with the process
    return proc, log, stats


def clear_session(broker: Mosquitto, client_id: str) -> None:
    """End a stopped primary's persistent session, so the broker stops queueing for it."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=MQTTProtocolVersion.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    c.connect("127.0.0.1", broker.port, clean_start=True, properties=props)
    c.loop_start()
    c.disconnect()
    c.loop_stop()


def _worker_pids(proc: subprocess.Popen[bytes], log: Path, workers: int) -> list[int]:
    if workers == 1:
        return [proc.pid]
    line = next(x for x in log.read_text().splitlines() if "event=workers_started" in x)
    return [int(p) for p in line.split("pids=")[1].split()[0].split(",")]


def _one_count(broker: Mosquitto, server: Influxd, influx: InfluxClient, workers: int,
               n_per_gw: int, tmp: Path, ingest_rate: Any) -> dict[str, Any]:
    proc, log, stats = _start(broker, server, workers, tmp)
    site = f"scale{workers}"
    try:
        _wait(lambda: log.read_text(errors="replace").count("event=ingest_started") == workers,
              90, f"{workers} ingestion workers subscribed")
        pids = _worker_pids(proc, log, workers)
        r = ingest_rate(broker, influx, n_per_gw, {f"w{i}": p for i, p in enumerate(pids)},
                        site=site)
    finally:
        proc.terminate()
        code = proc.wait(120)
        clear_session(broker, f"bench-w{workers}" + ("-0" if workers > 1 else ""))
    files = [stats] if workers == 1 else [Path(f"{stats}.{i}") for i in range(workers)]
    received = [json.loads(f.read_text())["received"].get("features", 0) for f in files]
    stored = _count(influx, "raw", "features", site)
    cpu = sum(r.get(f"w{i}_cpu_ms_per_summary", 0.0) for i in range(workers))
    return {"workers": workers, "published": r["summaries"], "stored": stored,
            "received_per_worker": received, "summaries_per_s": r["summaries_per_s"],
            "cpu_ms_per_summary_all_workers": round(cpu, 3), "exit_code": code}


def scale_out(broker: Mosquitto, server: Influxd, influx: InfluxClient, n_per_gw: int,
              tmp: Path, ingest_rate: Any, counts: tuple[int, ...] = (1, 2, 3)
              ) -> dict[str, Any]:
    """The ``scale_out`` object of the bench cloud JSON (keys named by the issue)."""
    clear_session(broker, "fiberwatch-ingest")  # the single process of the first part
    runs = [_one_count(broker, server, influx, w, n_per_gw, tmp, ingest_rate) for w in counts]
    published = sum(r["published"] for r in runs)
    stored = sum(r["stored"] for r in runs)
    dups = sum(max(0, sum(r["received_per_worker"]) - r["stored"]) for r in runs)
    return {
        "workers": list(counts), "gateways": len(GATEWAYS),
        "messages_published": published, "messages_stored": stored, "duplicates": dups,
        "lost": published - stored,
        "per_worker_share": [[round(x / max(1, sum(r["received_per_worker"])), 3)
                              for x in r["received_per_worker"]] for r in runs],
        "rate_per_worker_count": [r["summaries_per_s"] for r in runs],
        "cpu_ms_per_summary_per_worker_count": [r["cpu_ms_per_summary_all_workers"]
                                                for r in runs],
        "runs": runs,
    }
