"""`fiberwatch bench fl`: federated training on a real Flower deployment on loopback.

Data: the simulator (`federation.model.datasets.simulate`), five gateways that differ (three wells
and two pipelines, different flows and seeds: non-IID), each with its own normal-window buffer
of anomaly-free DAS feature rows. The evaluation set (the public set the server scores AUC on)
is simulated separately with leaks, sand and slugging on both geometries.

Measured in one run: seconds per round on a SuperLink with five SuperNodes (each a patched
SuperNode plus a warm ClientApp worker), upload bytes per client per round against fp32 full
weights, the final AUC of the federated model against a model trained centrally on the union
of the gateways' rows (same epochs in total), and a poisoning run (2 of 10 clients send scaled
or sign-flipped updates; FedAvg vs trimmed mean vs median). The poisoning run drives the same
ServerApp code (`federation.flower.rounds`, strategies, codecs) and the real ClientApp in process
(`rounds.InProcessGrid`): it measures robustness, not transport. A convergence plot goes to
``out_dir/fl_convergence.png``.

Parts: `fiberwatch.bench._fl_data` (gateways, evaluation set, central and untrained peers),
`._fl_poison` (the poisoning run) and `._fl_levers` (the full run's Flower levers table).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fiberwatch.bench._fl_data import GATEWAYS, central, make_data, untrained_auc
from fiberwatch.bench._fl_levers import levers
from fiberwatch.bench._fl_poison import poisoning


def _cpu_seconds(groups: list[Any], seen: dict[int, float]) -> float:
    """User+system CPU of the groups' processes and their descendants (from /proc); ``seen``
    keeps the last sample of each pid, so a process that has exited still counts."""
    from federation.processes import cpu_seconds, descendants

    pids = [p.pid for g in groups for p in g.procs if p.poll() is None]
    for pid in set(pids + descendants(pids)):  # CPU only grows: a process that has exited
        seen[pid] = max(seen.get(pid, 0.0), cpu_seconds(pid))  # keeps its last sample
    return sum(seen.values())


def federated(data: dict[str, Any], work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Five SuperNodes on a real SuperLink; the ServerApp's per-round reports."""
    from federation.flower.deployment import GatewayNode, SuperLink, start_all

    results, reports = work / "results", []
    with SuperLink(work / "superlink", insecure=True) as link:
        nodes = [GatewayNode(work / f"node{i}", link.address, insecure=True, node_config={
            "gateway-id": f"{g[0]}/{g[1]}", "normal-buffer": str(p), "partition-id": i})
            for i, (g, p) in enumerate(zip(GATEWAYS, data["buffers"], strict=True))]
        try:
            t0 = time.perf_counter()
            start_all(nodes)
            started = time.perf_counter() - t0
            groups, seen = [link.group, *(n.group for n in nodes)], dict[int, float]()
            cpu0 = _cpu_seconds(groups, seen)
            run_id = link.control.submit({**cfg, "results-dir": str(results),
                                          "eval-set": str(data["eval"]),
                                          "min-nodes": len(nodes)})
            bar = tqdm(total=cfg["num-rounds"], desc="federated rounds", leave=False)
            def on_round(r: dict[str, Any]) -> None:
                reports.append(r)
                bar.update(1)
                _cpu_seconds(groups, seen)

            summary = link.control.follow(run_id, results, timeout_s=900, on_round=on_round)
            bar.close()
            cpu_run = _cpu_seconds(groups, seen) - cpu0
            traffic = link.control.run_info(run_id).get("network-traffic", {})
        finally:
            for n in nodes:
                n.stop()
    steady = [r["duration_s"] for r in reports[1:]] or [reports[0]["duration_s"]]
    return {"rounds": reports, "summary": summary, "nodes_start_s": started,
            "s_per_round_median": statistics.median(steady),
            "s_per_round_first": reports[0]["duration_s"], "flwr_traffic": traffic,
            # every process of the deployment, the ServerApp's start and calibration included
            "cpu_s_per_round": cpu_run / len(reports),
            "bytes_up": reports[-1]["bytes_up"], "bytes_up_fp32": reports[-1]["bytes_up_fp32"],
            "bytes_up_flower_fp32": reports[-1]["bytes_up_flower_fp32"]}


def plot(result: dict[str, Any], out_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4))
    rs = result["federated"]["rounds"]
    a.plot([r["round"] for r in rs], [r["auc"] for r in rs], "o-", label="federated (5 SuperNodes)")
    a.axhline(result["central"]["auc"], color="k", ls="--", label="central, same epochs")
    a.axhline(result["central"]["auc_untrained"], color="r", ls=":", label="untrained floor")
    a.set(xlabel="round", ylabel="AUC (eval set, err_scale 1 until calibrated)",
          title="Convergence")
    a.legend()
    for key, v in result["poisoning"].items():
        b.plot(range(1, len(v["auc_per_round"]) + 1), v["auc_per_round"], label=key)
        c.plot(range(1, len(v["loss_per_round"]) + 1), v["loss_per_round"], label=key)
    b.set(xlabel="round", ylabel="AUC", title="2 of 10 clients poisoned: AUC")
    c.set(xlabel="round", ylabel="clients' held-out loss (log)", yscale="log",
          title="2 of 10 clients poisoned: loss")
    b.legend(fontsize=7)
    a2 = a.twinx()
    a2.plot([r["round"] for r in rs], [r["loss"] for r in rs], "s:", color="gray")
    a2.set_ylabel("clients' held-out loss (dotted)")
    fig.tight_layout()
    path = out_dir / "fl_convergence.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    lines = ["series,round,auc,loss"]  # the plot's data (not .json: the report reads those)
    lines += [f"federated,{r['round']},{r['auc']},{r['loss']}" for r in rs]
    lines += [f"central,0,{result['central']['auc']},"]
    for key, v in result["poisoning"].items():
        lines += [f"{key},{i + 1},{a},{x}" for i, (a, x) in enumerate(
            zip(v["auc_per_round"], v["loss_per_round"], strict=True))]
    (out_dir / "fl_convergence.csv").write_text("\n".join(lines) + "\n")
    return str(path)


def _load() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def run(quick: bool = False, out_dir: Path = Path("benchmarks")) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)  # like the gateways' workers; threads only fight on 2 cores
    rounds_n, frac = (6, 1.0) if quick else (30, 0.5)
    epochs = 1
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fiberwatch-bench-fl-") as tmp:
        work = Path(tmp)
        data = make_data(work, quick)
        cfg = {"num-rounds": rounds_n, "epochs": epochs, "local-fraction": frac,
               "strategy": "fedavg", "codec": "int8", "lr": 3e-3, "grace-s": 2.0}
        fed = federated(data, work / "fed", cfg)
        cen = central(data, epochs=max(1, round(rounds_n * epochs * frac)))
        cen["auc_untrained"] = untrained_auc(data)
        poison = poisoning(data, work, rounds_n=4 if quick else 12, epochs=1,
                           names=("fedavg", "trimmed-mean") if quick else
                           ("fedavg", "trimmed-mean", "median", "krum"))
        lever_rows = [] if quick else levers(work / "levers")
    fed_auc = float(fed["summary"]["auc"])
    result: dict[str, Any] = {
        "benchmark": "fl", "quick": quick, "gateways": len(GATEWAYS), "rounds": rounds_n,
        "local_epochs": epochs, "codec": cfg["codec"], "federated": fed, "central": cen,
        "auc_federated": fed_auc, "auc_central": cen["auc"],
        "auc_gap": cen["auc"] - fed_auc, "s_per_round": fed["s_per_round_median"],
        "upload_ratio_vs_fp32": fed["bytes_up"] / fed["bytes_up_fp32"],
        "upload_ratio_vs_flower_fp32": fed["bytes_up"] / fed["bytes_up_flower_fp32"],
        "poisoning": poison, "levers": lever_rows, "load_avg": _load(),
        "seconds_total": time.perf_counter() - t0}
    out_dir.mkdir(parents=True, exist_ok=True)
    result["plot"] = plot(result, out_dir)
    return result


def to_markdown(result: dict[str, Any]) -> str:
    fed, p = result["federated"], result["poisoning"]
    lines = [
        "## fl: Flower deployment (SuperLink + 5 SuperNodes on loopback)", "",
        f"{result['gateways']} gateways (3 wells, 2 pipelines; non-IID), {result['rounds']} "
        f"rounds x {result['local_epochs']} local epochs, codec `{result['codec']}`"
        + (" (quick)" if result.get("quick") else "") + ".", "",
        "| figure | value | peer | ratio |", "|---|---|---|---|",
        f"| seconds per round (median after round 1) | {result['s_per_round']:.2f} | "
        f"first round {fed['s_per_round_first']:.2f} | |",
        f"| CPU seconds per round, all deployment processes | "
        f"{fed.get('cpu_s_per_round', float('nan')):.2f} | 2 cores | |",
        f"| upload per client per round (bytes Flower moves) | {fed['bytes_up']} | "
        f"fp32 full weights {fed['bytes_up_fp32']} | {result['upload_ratio_vs_fp32']:.1%} |",
        f"| ... vs stock Flower fp32 ArrayRecord | {fed['bytes_up']} | "
        f"{fed['bytes_up_flower_fp32']} | {result['upload_ratio_vs_flower_fp32']:.1%} |",
        f"| AUC, federated (eval set) | {result['auc_federated']:.4f} | central "
        f"{result['auc_central']:.4f} | gap {result['auc_gap']:+.4f} |",
        f"| AUC floor: normalisation only, untrained | {result['central']['auc_untrained']:.4f}"
        " | | |", "",
        "Poisoning (2 of 10 clients; in-process transport, same ServerApp/ClientApp code):", "",
        "| attack / strategy | final AUC | clients' held-out loss |", "|---|---|---|",
        *[f"| {k} | {v['auc']:.4f} | {v['loss']:.3g} |" for k, v in p.items()], "",
        f"Plot: `{Path(result['plot']).name}`. Total {result['seconds_total']:.0f} s; load "
        f"average at the end {result.get('load_avg')} (the machine is shared: round times are "
        "CPU-bound and move with it).",
    ]
    if result.get("levers"):
        lines += ["", "Why a stock round was slow, lever by lever (toy FedAvg app with torch in "
                  "the ClientApp, 3 SuperNodes, median s/round after round 1):", "",
                  "| configuration | s/round |", "|---|---|",
                  *[f"| {x['lever']} | {x['s_per_round_median']:.2f} |" for x in result["levers"]]]
    return "\n".join(lines) + "\n"

