"""The benchmark report's plots and their section in BENCHMARKS.md."""

from __future__ import annotations

import json
from pathlib import Path

from fiberwatch.bench import _plots, _report


def _results() -> dict[str, dict]:
    hist = {"upper_ms": [1.12, 1.26, 200.0], "counts": [3, 5, 2], "count": 10, "max_ms": 190.0}
    return {
        "edge": {"benchmark": "edge", "pipeline_samples_per_s": 2e7, "bare_samples_per_s": 1e8,
                 "realtime_samples_per_s": 4.096e6, "targets": {"ratio": 0.5,
                                                                "beyond_hop_p99_ms": 20.0},
                 "capacity_steps": [{"offered_samples_per_s": 8e6, "scored_fraction": 1.0,
                                     "cpu_share": 0.5}],
                 "latency_hist": {"frame_to_score": hist, "beyond_hop": hist}},
        "cloud": {"benchmark": "cloud", "ingest": {"channel_values_per_s": 3e6},
                  "peer_raw_write": {"channel_values_per_s": 1e7}, "ratio_goal": 0.6,
                  "window": {"samples_ms": [300.0, 310.0, 420.0], "goal_p95_ms": 300.0}},
    }


def test_pairs_carry_ours_peer_and_goal() -> None:
    pairs = {p[0]: p for p in _plots.throughput_pairs(_results())}
    edge = pairs["edge: agent pipeline (sustained)"]
    assert edge[1] / edge[3] == 0.2 and edge[5] == 0.5
    assert pairs["cloud: MQTT -> InfluxDB ingestion"][5] == 0.6
    assert _plots.throughput_pairs({}) == []


def test_make_draws_pngs(tmp_path: Path) -> None:
    plots = _plots.make(_results(), tmp_path)
    names = sorted(p.name for _, p in plots)
    assert names == ["latency.png", "throughput.png"]
    for _, p in plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_nothing_to_draw_is_no_plot(tmp_path: Path) -> None:
    assert _plots.make({"sim": {"benchmark": "sim"}}, tmp_path) == []
    assert not list(tmp_path.iterdir())


def test_report_links_plots_relative_to_the_report(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks"
    out.mkdir()
    for name, result in _results().items():
        (out / f"{name}.json").write_text(json.dumps(result))
    (out / "side.json").write_text(json.dumps({"benchmark": "other"}))  # not a result
    _report.write(out, tmp_path / "BENCHMARKS.md")
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "![throughput against peers](benchmarks/throughput.png)" in text
    assert "![latency distributions](benchmarks/latency.png)" in text
    assert "## Plots" in text and "side" not in text


def test_benchmarks_own_plots_are_found_even_from_another_checkout(tmp_path: Path) -> None:
    (tmp_path / "model-plots").mkdir()
    (tmp_path / "model-plots" / "detection_table.png").write_bytes(b"png")
    (tmp_path / "fl_convergence.png").write_bytes(b"png")
    results = {"model": {"plots": ["/elsewhere/docs/model/detection_table.png"]},
               "fl": {"plot": "/elsewhere/fl_convergence.png"}}
    found = dict(_plots.existing(results, tmp_path))
    assert found["detection table against peers (bench model)"] == \
        tmp_path / "model-plots" / "detection_table.png"
    assert found["federated convergence (bench fl)"] == tmp_path / "fl_convergence.png"
    assert _plots.existing({}, tmp_path) == []


def _bench_report(out_dir: Path) -> None:
    import argparse

    from fiberwatch.commands.bench import _run

    _run(argparse.Namespace(name="report", out_dir=out_dir, json=None, quick=False))


def test_a_scratch_out_dir_gets_its_own_report_not_the_repositorys(tmp_path: Path,
                                                                   monkeypatch) -> None:
    repo, scratch = tmp_path / "repo", tmp_path / "scratch"
    (repo / "benchmarks").mkdir(parents=True)
    scratch.mkdir()
    (scratch / "sim.json").write_text(json.dumps({"benchmark": "sim"}))
    monkeypatch.chdir(repo)
    _bench_report(scratch)
    assert not (repo / "BENCHMARKS.md").exists()
    assert (scratch / "BENCHMARKS.md").read_text().startswith("# Benchmarks")
    _bench_report(Path("benchmarks"))  # the repository's own directory: its report
    assert (repo / "BENCHMARKS.md").exists() and not (repo / "benchmarks/BENCHMARKS.md").exists()
