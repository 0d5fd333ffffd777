"""`fiberwatch bench chaos`: faults and fuzzing against the real stack; nothing may be lost.

Real Mosquitto, influxd (with its default 25 MB body limit), ingestion and the API as
their own processes, and gateways publishing through the edge agent's uplink and durable
outbox. Cloud-side faults (this module's): broker restart, influxd stopped 60 s, ingestion
SIGKILL mid-stream, one 30 MB message on each topic. Each reports events published (handed
to the gateway's outbox), stored (in InfluxDB), lost and duplicates, plus the QoS0 feature
summaries published and stored. API fuzzing: schemathesis over every route of the live
API's OpenAPI document, valid and invalid data, with a token of each role, an invalid token
and none; counts requests and 5xx answers.

Gateway-side faults (agent SIGKILL, outbox disk full, clock jump, forged far-future frame)
and the frame fuzzing come from `fiberwatch.bench._chaos_edge` (see `_edge_results`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fiberwatch.bench import _chaos_faults as faults
from fiberwatch.bench._chaos_api import fuzz
from fiberwatch.bench._chaos_stack import TOKENS, Stack

OUTAGE_S = 60.0
EDGE_FUZZ_FRAMES, EDGE_FUZZ_FRAMES_QUICK = 1_000_000, 100_000
API_EXAMPLES = 60  # per operation and mode: 13 operations x 2 x 4 tokens -> > 5,000 requests


def _api_fuzz(stack: Stack, examples: int) -> dict[str, Any]:
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{stack.api_url}/openapi.json")
    tokens: list[str | None] = [TOKENS["admin"], TOKENS["viewer"],
                                "chaos-unknown-token-0123456789", None]
    return fuzz(schema, tokens, examples, base_url=stack.api_url).to_dict()


def _edge_results(quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The gateway-side faults and the frame fuzzing of ``fiberwatch.bench._chaos_edge``:
    ``run_frame_fuzz(frames=...) -> {"frames", "crashes", "stream_recovered"}`` and one
    function per fault (agent SIGKILL, outbox disk full, clock jump, forged far-future frame)
    returning ``{"name", "events_published", "events_stored", "lost", "duplicates"}``, each
    on a stack of its own (events counted by ``gateway_event_id``: ingestion stores them
    under `cloud.codec.cloud_event_id`)."""
    from fiberwatch.bench import _chaos_edge as edge

    names = ("fault_agent_sigkill", "fault_outbox_disk_full", "fault_clock_jump",
             "fault_forged_frame")
    # work dirs of ours: the disk-full fault mounts a tmpfs in its dir, which a plain
    # TemporaryDirectory may fail to remove right after the (lazy) unmount
    with tempfile.TemporaryDirectory(prefix="fw-bench-chaos-edge-",
                                     ignore_cleanup_errors=True) as tmp:
        faults_run = [getattr(edge, n)(work=Path(tmp) / n) for n in names]
        frame_fuzz = edge.run_frame_fuzz(frames=EDGE_FUZZ_FRAMES_QUICK if quick
                                         else EDGE_FUZZ_FRAMES, work=Path(tmp) / "fuzz")
    return faults_run, frame_fuzz


def run(quick: bool, out_dir: Path) -> dict[str, Any]:
    """Every cloud fault in turn on one stack, then the API fuzzing, then the edge part."""
    del out_dir
    with tempfile.TemporaryDirectory(prefix="fw-bench-chaos-") as tmp:
        root = Path(tmp)
        stack = Stack(root)
        try:
            stack.start()
            results = [faults.broker_restart(stack, root),
                       faults.influxd_stopped(stack, root, OUTAGE_S),
                       faults.ingest_sigkill(stack, root),
                       faults.oversized_messages(stack, root)]
            api = _api_fuzz(stack, API_EXAMPLES)
            health = stack.health()
        finally:
            stack.stop()
    edge_faults, frame_fuzz = _edge_results(quick)
    results += edge_faults
    return {"benchmark": "chaos", "quick": quick, "faults": results,
            "total_events_lost": sum(r["lost"] for r in results),
            "total_duplicates": sum(r["duplicates"] for r in results),
            "fuzz": frame_fuzz, "api_fuzz": api, "api_health_after": health}


def to_markdown(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md section: the per-fault table, then fuzzing."""
    lines = ["## chaos: faults and fuzzing against the real stack", "",
             "Real Mosquitto, influxd (25 MB body limit), ingestion and API processes; "
             "gateways publish through the agent's uplink and durable outbox. Events are "
             "QoS1, summaries QoS0 (as the agent sends them); ingestion spools summaries on "
             "disk until written and the broker queues QoS0 for its persistent session "
             "(`queue_qos0_messages`). The broker's packet limit is raised to 64 MiB here so "
             "that the 30 MB messages reach ingestion (its own per-kind caps refuse them)"
             + (" (quick run)." if result.get("quick") else "."), "",
             "| fault | events published | stored | lost | duplicates | summaries published "
             "| stored |", "|---|---|---|---|---|---|---|"]
    for r in result["faults"]:
        lines.append(f"| {r['name']} | {r['events_published']} | {r['events_stored']} | "
                     f"{r['lost']} | {r['duplicates']} | {r.get('summaries_published', '')} | "
                     f"{r.get('summaries_stored', '')} |")
    f, a = result["fuzz"], result["api_fuzz"]
    crashes = sum(r.get("agent_crashes", 0) for r in result["faults"])
    lines += ["", f"Total events lost: **{result['total_events_lost']}**, duplicates stored: "
              f"**{result['total_duplicates']}**, agent crashes in the gateway faults: "
              f"**{crashes}**.", "",
              f"API fuzzing (schemathesis, {a['operations']} operations, valid/invalid data, "
              f"4 tokens): **{a['requests']:,} requests, {a['status_5xx']} answered 5xx** "
              f"(statuses: {', '.join(f'{k}: {v}' for k, v in a['by_status'].items())}).", "",
              "Frame fuzzing: " + (f"{f['frames']:,} frames, {f['crashes']} agent crashes, "
                                   f"stream recovered: {f['stream_recovered']}."
                                   if not f.get("not_run") else f"not run ({f['not_run']})."),
              ]
    return "\n".join(lines)
