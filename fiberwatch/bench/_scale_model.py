"""The scale model in BENCHMARKS.md: capacity on paper from measured CPU per message.

Inputs, all measured by ``bench cloud`` (and ``bench edge`` for the gateway row): the CPU
time per 1,024-group feature summary of the ingestion process, influxd and Mosquitto, and
the 1-, 2- and 3-worker rates. The site is the demo's, read from the shipped gateway configs
(``firmware_configs/gateways/*.toml``): its gateways, streams and channels. Every stream
sends one summary per `SUMMARY_HZ`; health every 5 s and events (a few per hour) are counted
at the summary's cost, an upper bound for their small JSON.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

SUMMARY_HZ = 1.0
HEALTH_HZ = 0.2
BUSY = 0.7  # plan for 70 % of a core
SITES = 100
_CONFIGS = Path(__file__).resolve().parents[2] / "firmware_configs" / "gateways"


def demo_site(configs: Path = _CONFIGS) -> dict[str, int]:
    """Gateways, streams and channels of the demo site (one TOML per gateway)."""
    gws = [tomllib.loads(p.read_text()) for p in sorted(configs.glob("*.toml"))]
    streams = [s for g in gws for s in g.get("streams", [])]
    return {"gateways": len(gws), "streams": len(streams),
            "channels": sum(int(s["channels"]) for s in streams)}


def _rows(cloud: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(part, CPU ms per message, messages/s it holds at BUSY of one core)."""
    i = cloud["ingest"]
    parts = [("ingestion worker (1 process, ~1 core)", i.get("ingest_cpu_ms_per_summary")),
             ("influxd, per core", i.get("influxd_cpu_ms_per_summary")),
             ("Mosquitto (1 core, single-threaded)", i.get("mosquitto_cpu_ms_per_summary"))]
    return [(name, ms, BUSY * 1000.0 / ms) for name, ms in parts if ms]


def section(results: dict[str, dict[str, Any]], configs: Path = _CONFIGS) -> str:
    cloud = results.get("cloud")
    if not cloud or "ingest" not in cloud:
        return ""
    site = demo_site(configs)
    per_gw = (site["streams"] * SUMMARY_HZ + site["gateways"] * HEALTH_HZ) / site["gateways"]
    per_site = per_gw * site["gateways"]
    ch_per_msg = site["channels"] / per_site
    lines = [
        "## scale model (from the measured CPU per message)", "",
        f"Demo site, from the shipped gateway configs: {site['gateways']} gateways, "
        f"{site['streams']} streams, {site['channels']:,} channels; each stream sends "
        f"{SUMMARY_HZ:g} summary/s and each gateway {HEALTH_HZ:g} health/s: "
        f"{per_site:.1f} messages/s per site. Costs are per 1,024-group summary, "
        f"{cloud['ingest'].get('format', 'JSON (schema 1)')} (an upper bound for the demo's "
        f"128-group ones); planning at {BUSY:.0%} of a core.", "",
        "| part | CPU ms per message | messages/s | gateways | channels | sites |",
        "|---|---|---|---|---|---|",
    ]
    need = []
    for name, ms, rate in _rows(cloud):
        lines.append(f"| {name} | {ms:.3f} | {rate:,.0f} | {rate / per_gw:,.0f} | "
                     f"{rate * ch_per_msg / 1e6:,.1f} M | {rate / per_site:,.0f} |")
        need.append((name, math.ceil(SITES * per_site / rate)))
    lines += ["", f"{SITES} sites = {SITES * per_site:,.0f} messages/s, "
              f"{SITES * site['channels'] / 1e6:.1f} M channels: "
              + "; ".join(f"{name.split(' (')[0].split(',')[0]}: {n}" for name, n in need)
              + " (cores, at least 1 each). Write path only: dashboard queries and "
              "InfluxDB compactions come on top, and a second ingestion worker and broker "
              "node are for availability, not load."]
    lines += _measured_scale(cloud) + _gateway_line(results.get("edge"))
    return "\n".join(lines) + "\n"


def _measured_scale(cloud: dict[str, Any]) -> list[str]:
    so = cloud.get("scale_out")
    if not so:
        return []
    rates = ", ".join(f"{w} worker{'s' if w > 1 else ''} {r:,.0f}/s"
                      for w, r in zip(so["workers"], so["rate_per_worker_count"], strict=True))
    return ["", f"Measured stored summaries/s on this machine's {cloud['machine']['cores']} "
            f"cores (broker, influxd and workers share them, so this is not the per-core "
            f"figure above): {rates}."]


def _gateway_line(edge: dict[str, Any] | None) -> list[str]:
    if not edge or not edge.get("capacity_per_core_samples_per_s"):
        return []
    ch = edge["capacity_per_core_samples_per_s"] / edge["sample_rate_hz"]
    return ["", f"Gateway agent: {edge['capacity_per_core_samples_per_s'] / 1e6:.1f} M "
            f"samples/s per core from its CPU time at real time, i.e. about {ch:,.0f} DAS "
            f"channels at {edge['sample_rate_hz']:g} Hz per gateway core."]
