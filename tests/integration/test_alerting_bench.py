"""`fiberwatch bench alerting --quick` runs end to end on real parts and renders: every
published event's alert is matched at the webhook (by the cloud's event id), none is lost
across the receiver's outage."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiberwatch.bench import alerting

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_bench_matches_every_alert_and_renders(tmp_path: Path) -> None:
    result = alerting.run(quick=True, out_dir=tmp_path)
    lat, outage = result["alert_latency_ms"], result["outage"]
    assert lat["n"] == 20 and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert (outage["events"], outage["delivered"], outage["lost"]) == (10, 10, 0)
    text = alerting.to_markdown(result)
    assert text.startswith("## alerting") and "n = 20" in text and "nan" not in text
