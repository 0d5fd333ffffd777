"""The report's plots, drawn from the benchmarks' JSON results.

``throughput.png``  each component's rate next to the peer measured in the same run (log
                    scale, the ratio written on the bar), and the edge agent's capacity steps.
``latency.png``     distributions: the edge agent's frame-to-score and beyond-the-hop latency
                    (log-binned histograms from the real-time phase) and the cloud's 1 h
                    history-window calls, each with its goal.
The detection table (``bench model``) and federated convergence (``bench fl``) plots are
drawn by their benchmarks; `existing` finds them for the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

Results = dict[str, dict[str, Any]]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


Pair = tuple[str, float, str, float, str, float | None]


def throughput_pairs(results: Results) -> list[Pair]:
    """(label, ours, peer label, peer, unit, goal ratio) for each benchmark with a peer."""
    pairs: list[Pair] = []
    if "publish" in (sim := results.get("sim", {})):
        pub = sim["publish"]
        pairs.append(("sim: publish over MQTT", pub["sim"]["sent_samples_per_s"],
                      "bare paho publish", pub["bare_paho_peer"]["sent_samples_per_s"],
                      "samples/s", None))
    if "pipeline_samples_per_s" in (edge := results.get("edge", {})):
        pairs.append(("edge: agent pipeline (sustained)", edge["pipeline_samples_per_s"],
                      "bare paho receive", edge["bare_samples_per_s"], "samples/s",
                      edge.get("targets", {}).get("ratio")))
    if "peer_raw_write" in (cloud := results.get("cloud", {})):
        pairs.append(("cloud: MQTT -> InfluxDB ingestion",
                      cloud["ingest"]["channel_values_per_s"], "raw line-protocol write",
                      cloud["peer_raw_write"]["channel_values_per_s"], "values/s",
                      cloud.get("ratio_goal")))
    tp = results.get("model", {}).get("throughput_rows_per_s", {})
    if "batch_256" in tp and "invoke_only_batch_256" in tp:
        pairs.append(("model: LiteRT int8 scoring, batch 256", tp["batch_256"],
                      "interpreter invoke only", tp["invoke_only_batch_256"], "rows/s", None))
    return pairs


def throughput(results: Results, path: Path) -> Path | None:
    pairs = throughput_pairs(results)
    if not pairs:
        return None
    plt = _plt()
    steps = results.get("edge", {}).get("capacity_steps") or []
    ncols = 2 if steps else 1
    fig, axes = plt.subplots(1, ncols, figsize=(7 * ncols, 0.9 * len(pairs) + 1.6),
                             squeeze=False)
    ax = axes[0][0]
    y = 0.0
    ticks, labels = [], []
    for label, ours, peer_label, peer, unit, goal in pairs:
        ax.barh(y + 0.2, peer, height=0.38, color="#9aa7b4")
        ax.barh(y - 0.2, ours, height=0.38, color="#e4572e")
        ax.text(peer, y + 0.2, f"  {peer_label}", va="center", fontsize=8)
        note = f" (goal >= {goal:g})" if goal else ""
        ax.text(ours, y - 0.2, f"  {ours / max(peer, 1e-12):.2f} x peer{note}", va="center",
                fontsize=8, fontweight="bold")
        ticks.append(y)
        labels.append(f"{label}\n({unit})")
        y -= 1.2
    ax.set_xscale("log")
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_title("throughput: ours (red) vs the peer measured in the same run (grey)",
                 fontsize=9)
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 30)
    if steps:
        ax2 = axes[0][1]
        real_time = results["edge"]["realtime_samples_per_s"]
        offered = [s["offered_samples_per_s"] / 1e6 for s in steps]
        scored = [100 * s["scored_fraction"] for s in steps]
        cpu = [100 * s["cpu_share"] for s in steps]
        ax2.plot(offered, scored, "o-", color="#e4572e", label="windows scored (%)")
        ax2.plot(offered, cpu, "s--", color="#4c72b0", label="agent CPU (% of a core)")
        ax2.axvline(real_time / 1e6, color="grey", ls=":", label="real time (2,048 ch, 2 kHz)")
        ax2.set_xlabel("offered rate (M samples/s)")
        ax2.set_ylim(0, 115)
        ax2.set_title("edge agent capacity steps", fontsize=9)
        ax2.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _hist(ax: Any, hist: dict[str, Any], label: str, color: str) -> None:
    import numpy as np

    upper = np.asarray(hist.get("upper_ms", []), dtype=float)
    counts = np.asarray(hist.get("counts", []), dtype=float)
    if not upper.size:
        return
    lower = upper / 10 ** (1 / 20)  # 20 log-spaced bins per decade
    share = 100 * counts / counts.sum()
    ax.bar(lower, share, width=upper - lower, align="edge", alpha=0.6, color=color,
           label=f"{label} (n={int(counts.sum())})")


def latency(results: Results, path: Path) -> Path | None:
    edge, cloud = results.get("edge", {}), results.get("cloud", {})
    hists = edge.get("latency_hist")
    samples = cloud.get("window", {}).get("samples_ms")
    if not hists and not samples:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    ax = axes[0]
    if hists:
        _hist(ax, hists["frame_to_score"], "frame received -> scored", "#4c72b0")
        _hist(ax, hists["beyond_hop"], "window complete -> scored (beyond the hop)", "#e4572e")
        goal = edge.get("targets", {}).get("beyond_hop_p99_ms")
        if goal:
            ax.axvline(goal, color="k", ls="--", lw=1, label=f"goal p99 <= {goal:g} ms")
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("% of samples")
        ax.legend(fontsize=8)
    ax.set_title("edge agent, real time (2,048 channels)", fontsize=9)
    ax = axes[1]
    if samples:
        import numpy as np

        s = np.sort(np.asarray(samples, dtype=float))
        ax.step(s, np.arange(1, s.size + 1) / s.size * 100, where="post", color="#e4572e",
                label=f"Store.window, 1 h x 1,024 ch (n={s.size})")
        goal = cloud["window"].get("goal_p95_ms")
        if goal:
            ax.axvline(goal, color="k", ls="--", lw=1, label=f"goal p95 <= {goal:g} ms")
        ax.axhline(95, color="grey", ls=":", lw=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("cumulative %")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title("cloud history window", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def existing(results: Results, out_dir: Path) -> list[tuple[str, Path]]:
    """The plots the benchmarks drew themselves, where they are on disk (a result's paths
    may come from another checkout: the same names are looked up here too)."""
    found = []
    model = results.get("model", {})
    if model:
        dirs = [Path(p).parent for p in model.get("plots", [])]
        dirs += [out_dir / "model-plots", Path(__file__).resolve().parents[2] / "docs" / "model"]
        for name, caption in (("detection_table.png", "detection table against peers"),
                              ("roc.png", "ROC curves against peers")):
            hit = next((d / name for d in dirs if (d / name).exists()), None)
            if hit is not None:
                found.append((f"{caption} (bench model)", hit))
    conv = out_dir / "fl_convergence.png"  # drawn next to fl.json
    if "fl" in results and conv.exists():
        found.append(("federated convergence (bench fl)", conv))
    return found


def make(results: Results, out_dir: Path) -> list[tuple[str, Path]]:
    """Draw the report's own plots into `out_dir`; return (caption, path) for all plots."""
    plots = []
    if p := throughput(results, out_dir / "throughput.png"):
        plots.append(("throughput against peers", p))
    if p := latency(results, out_dir / "latency.png"):
        plots.append(("latency distributions", p))
    return plots + existing(results, out_dir)
