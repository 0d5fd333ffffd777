"""The BENCHMARKS.md scale model: arithmetic from the measured CPU per message."""

from __future__ import annotations

from pathlib import Path

from fiberwatch.bench._scale_model import demo_site, section


def test_demo_site_is_read_from_the_shipped_configs() -> None:
    site = demo_site()
    assert site["gateways"] >= 1 and site["streams"] >= site["gateways"]
    assert site["channels"] >= 1024


def test_table_from_measured_costs(tmp_path: Path) -> None:
    for name, body in (("a", '[[streams]]\nchannels = 1000\n[[streams]]\nchannels = 1000\n'),
                       ("b", '[[streams]]\nchannels = 2000\n')):
        (tmp_path / f"{name}.toml").write_text(body)
    cloud = {"ingest": {"ingest_cpu_ms_per_summary": 0.35, "influxd_cpu_ms_per_summary": 0.7,
                        "mosquitto_cpu_ms_per_summary": 0.07},
             "machine": {"cores": 2},
             "scale_out": {"workers": [1, 2], "rate_per_worker_count": [1000.0, 1800.0]}}
    text = section({"cloud": cloud}, tmp_path)
    # site: 2 gateways, 3 streams -> 3 + 0.4 = 3.4 messages/s; ingestion 0.7 * 1000 / 0.35
    assert "3.4 messages/s per site" in text
    assert "| ingestion worker (1 process, ~1 core) | 0.350 | 2,000 | 1,176 | 2.4 M | 588 |" \
        in text
    # 100 sites = 340 messages/s: 1 worker, influxd 340 / 1000 -> 1, Mosquitto 1
    assert "100 sites = 340 messages/s, 0.4 M channels: ingestion worker: 1; influxd: 1; " \
        "Mosquitto: 1" in text
    assert "1 worker 1,000/s, 2 workers 1,800/s" in text
    assert section({}, tmp_path) == ""
