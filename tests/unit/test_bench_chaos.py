"""`fiberwatch bench chaos`: the JSON contract renders, and the edge part says when it is
missing (the run itself needs the real stack: `fiberwatch bench chaos --quick`)."""

from __future__ import annotations

import json
from pathlib import Path

from fiberwatch.bench import chaos
from fiberwatch.commands.bench import available

FAULT_KEYS = {"name", "events_published", "events_stored", "lost", "duplicates"}


def test_chaos_is_a_benchmark() -> None:
    assert "chaos" in available()


def test_the_recorded_result_keeps_the_contract() -> None:
    result = json.loads((Path(__file__).parents[2] / "benchmarks" / "chaos.json").read_text())
    assert {"faults", "total_events_lost", "total_duplicates", "fuzz", "api_fuzz"} <= set(result)
    assert all(FAULT_KEYS <= set(f) for f in result["faults"])
    names = {f["name"] for f in result["faults"]}
    assert {"broker_restart", "ingest_sigkill", "oversized_30mb_each_topic"} <= names
    assert any(n.startswith("influxd_stopped_") for n in names)
    assert {"frames", "crashes", "stream_recovered"} <= set(result["fuzz"])
    assert {"requests", "status_5xx"} <= set(result["api_fuzz"])
    assert result["total_events_lost"] == sum(f["lost"] for f in result["faults"])
    text = chaos.to_markdown(result)
    assert "| broker_restart |" in text and "API fuzzing" in text


def test_a_chaos_gateway_builds_from_a_valid_config(tmp_path: Path) -> None:
    from fiberwatch.bench._chaos_stack import Gateway

    gw = Gateway(tmp_path, 1883, "chaos-unit")  # not started: no broker needed
    try:
        assert gw.site == "chaos-unit" and gw.events == []
    finally:
        gw.outbox.close()
