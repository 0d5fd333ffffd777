"""`fiberwatch bench fl`: federated training on a real Flower deployment on loopback.

Data: the simulator (`federation.datasets.simulate`), five gateways that differ (three wells
and two pipelines, different flows and seeds: non-IID), each with its own normal-window buffer
of anomaly-free DAS feature rows. The evaluation set (the public set the server scores AUC on)
is simulated separately with leaks, sand and slugging on both geometries.

Measured in one run: seconds per round on a SuperLink with five SuperNodes (each a patched
SuperNode plus a warm ClientApp worker), upload bytes per client per round against fp32 full
weights, the final AUC of the federated model against a model trained centrally on the union
of the gateways' rows (same epochs in total), and a poisoning run (2 of 10 clients send scaled
or sign-flipped updates; FedAvg vs trimmed mean vs median). The poisoning run drives the same
ServerApp code (`federation.rounds`, strategies, codecs) and the real ClientApp in process
(`rounds.InProcessGrid`): it measures robustness, not transport. A convergence plot goes to
``out_dir/fl_convergence.png``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

GATEWAYS = (("well-a", "gw1", "well", 1.0, 11), ("well-a", "gw2", "well", 1.4, 12),
            ("well-b", "gw1", "well", 0.7, 13), ("pipe-1", "gw1", "pipeline", 1.0, 14),
            ("pipe-2", "gw1", "pipeline", 1.6, 15))
# kind, onset (fraction of the run), channels (fractions of the fiber), intensity
SCENARIOS = (("leak", 0.25, (0.4, 0.4), 0.6), ("sand", 0.55, (0.6, 0.7), 0.6),
             ("slug", 0.75, (0.1, 0.25), 0.6))


def _sim(geometry: str, flow: float, seed: int, seconds: float, channels: int,
         anomalies: bool) -> Any:
    from federation.datasets import simulate
    from sensors_sim.config import Scenario, SimConfig

    def span(lo: float, hi: float) -> dict[str, int]:
        a, b = int(lo * channels), int(hi * channels)
        return {"channel": a} if a == b else {"ch_start": a, "ch_end": b}

    sc = tuple(Scenario(k, onset=f * seconds, duration=0.15 * seconds, intensity=i, **span(*c))
               for k, f, c, i in SCENARIOS) if anomalies else ()
    cfg = SimConfig(geometry=geometry, channels=channels, seconds=seconds, flow=flow,
                    streams=("das",), scenarios=sc)
    return simulate(cfg, seed=seed)


def make_data(work: Path, quick: bool) -> dict[str, Any]:
    """Normal buffers per gateway, the union (for the central model) and the eval set."""
    from edge_agent.normal_buffer import NormalBuffer
    from federation.datasets import DAS_SPEC

    seconds, channels = (30.0, 32) if quick else (90.0, 64)
    rows, buffers = [], []
    for site, gw, geo, flow, seed in tqdm(GATEWAYS, desc="simulate gateways", leave=False):
        fs = _sim(geo, flow, seed, seconds, channels, anomalies=False)
        path = work / f"{site}-{gw}.fwnb"
        with NormalBuffer(path, dim=DAS_SPEC.dim, spec_hash=DAS_SPEC.hash, max_rows=20000) as b:
            b.append(fs.rows)
        rows.append(fs.rows)
        buffers.append(path)
    ev_rows, ev_labels = [], []
    for geo, seed in (("well", 91), ("pipeline", 92)):
        fs = _sim(geo, 1.0, seed, seconds, channels, anomalies=True)
        ev_rows.append(fs.rows)
        ev_labels.append(fs.truth().ravel())
    eval_path = work / "eval.npz"
    np.savez(eval_path, rows=np.concatenate(ev_rows), labels=np.concatenate(ev_labels))
    return {"rows": rows, "buffers": buffers, "eval": eval_path,
            "eval_rows": np.concatenate(ev_rows), "eval_labels": np.concatenate(ev_labels)}


def central(data: dict[str, Any], epochs: int) -> dict[str, Any]:
    from federation import task
    from federation.server_app import roc_auc

    t0 = time.perf_counter()
    model, _ = task.prepare_and_fit(np.concatenate(data["rows"]), epochs=epochs, lr=3e-3,
                                    batch_size=128)
    auc = roc_auc(task.score_rows(model, data["eval_rows"]), data["eval_labels"])
    return {"auc": auc, "epochs": epochs, "seconds": time.perf_counter() - t0}


def untrained_auc(data: dict[str, Any]) -> float:
    """The floor: normalisation and error scale only, no training (z-score detector)."""
    from federation import task
    from federation.server_app import roc_auc

    rows = np.concatenate(data["rows"])
    model = task.build_model(rows.shape[1])
    task.set_normalization(model, *task.stats_mean_std(task.feature_stats(rows)))
    task.set_error_scale(model, task.error_scale(model, rows))
    return roc_auc(task.score_rows(model, data["eval_rows"]), data["eval_labels"])


def _cpu_seconds(groups: list[Any], seen: dict[int, float]) -> float:
    """User+system CPU of the groups' processes and their descendants (from /proc); ``seen``
    keeps the last sample of each pid, so a process that has exited still counts."""
    import os

    from federation.processes import _descendants

    pids = [p.pid for g in groups for p in g.procs if p.poll() is None]
    for pid in set(pids + _descendants(pids)):
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seen[pid] = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return sum(seen.values())


def federated(data: dict[str, Any], work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Five SuperNodes on a real SuperLink; the ServerApp's per-round reports."""
    from federation.deployment import GatewayNode, SuperLink

    results, reports = work / "results", []
    with SuperLink(work / "superlink", insecure=True) as link:
        nodes = [GatewayNode(work / f"node{i}", link.address, insecure=True, node_config={
            "gateway-id": f"{g[0]}/{g[1]}", "normal-buffer": str(p), "partition-id": i})
            for i, (g, p) in enumerate(zip(GATEWAYS, data["buffers"], strict=True))]
        try:
            t0 = time.perf_counter()
            for n in nodes:
                n.launch()
            for n in nodes:
                n.ready()
            for n in nodes:
                n.warm()
            started = time.perf_counter() - t0
            groups, seen = [link.group, *(n.group for n in nodes)], {}
            cpu0 = _cpu_seconds(groups, seen)
            run_id = link.control.submit({**cfg, "results-dir": str(results),
                                          "eval-set": str(data["eval"]),
                                          "min-nodes": len(nodes)})
            bar = tqdm(total=cfg["num-rounds"], desc="federated rounds", leave=False)
            summary = link.control.follow(run_id, results, timeout_s=900, on_round=lambda r: (
                reports.append(r), bar.update(1), _cpu_seconds(groups, seen)))
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


def poisoning(data: dict[str, Any], work: Path, rounds_n: int, epochs: int,
              names: tuple[str, ...] = ("fedavg", "trimmed-mean", "median")) -> dict[str, Any]:
    """10 clients (each gateway's rows split in two), 2 attackers; AUC per strategy/attack."""
    from flwr.app import ArrayRecord

    from edge_agent.normal_buffer import NormalBuffer
    from federation import client_app, rounds, strategies, task
    from federation.datasets import DAS_SPEC
    from federation.server_app import Evaluator, _with_error_scale

    cfgs: dict[int, dict[str, Any]] = {}
    for i, r in enumerate(data["rows"]):
        for j, part in enumerate((r[0::2], r[1::2])):
            path = work / f"poison-{i}-{j}.fwnb"
            with NormalBuffer(path, dim=DAS_SPEC.dim, spec_hash=DAS_SPEC.hash,
                              max_rows=20000) as b:
                b.append(part)
            cfgs[100 + 2 * i + j] = {"normal-buffer": str(path)}
    ev = Evaluator(str(data["eval"]), DAS_SPEC.dim, "ae-32-8")
    timing = rounds.Timing(round_timeout_s=60, grace_s=0, poll_s=0)
    out: dict[str, Any] = {}
    for attack in ("scale:10", "flip:10"):
        for name in names:
            attacked = {n: {**c, "attack": attack if n in (101, 108) else "none"}
                        for n, c in cfgs.items()}
            grid = rounds.InProcessGrid(client_app.app, attacked, {"arch": "ae-32-8"})
            stats = rounds.federated_stats(grid, list(cfgs), quorum=8, timing=timing)
            model = task.build_model(DAS_SPEC.dim)
            task.set_normalization(model, *task.stats_mean_std(stats))
            s = strategies.build(name, min_train_nodes=8, min_available_nodes=8,
                                 train_config={"epochs": epochs, "lr": 3e-3})
            aucs: list[float] = []
            losses: list[float] = []

            def record(r: Any, arrays: Any, aucs: list[float] = aucs,
                       losses: list[float] = losses) -> None:
                aucs.append(ev.auc(arrays))
                losses.append(r.loss)

            final = rounds.train_rounds(s, grid, ArrayRecord(task.get_weights(model)),
                                        rounds_n, timing=timing, on_round=record)
            final, _, loss = rounds.calibrate(grid, list(cfgs), final, quorum=8, timing=timing,
                                              set_error_scale=_with_error_scale(
                                                  DAS_SPEC.dim, "ae-32-8"))
            # AUC of the calibrated final model; loss: the clients' held-out loss of it
            out[f"{attack}/{name}"] = {"auc": ev.auc(final), "auc_per_round": aucs,
                                       "loss": loss, "loss_per_round": losses}
    return out


_LEVER_APP = {
    "pyproject.toml": """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
[project]
name = "fwlever"
version = "1.0.0"
description = "stock FedAvg with torch in the ClientApp: measures Flower's per-round overhead"
license = "Apache-2.0"
[tool.flwr.app]
publisher = "fiberwatch"
[tool.flwr.app.components]
serverapp = "fwlever:server"
clientapp = "fwlever:client"
[tool.flwr.app.config]
num-rounds = 3
fast = false
fold = false
out = ""
""",
    "fwlever.py": """import json, time
import numpy as np
import torch  # noqa: F401  (a real ClientApp imports torch)
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.serverapp.strategy import FedAvg
client = ClientApp()
server = ServerApp()

@client.train()
def train(msg: Message, context: Context) -> Message:
    arrs = [a + 0.01 for a in msg.content["arrays"].to_numpy_ndarrays()]
    return Message(RecordDict({"arrays": ArrayRecord(arrs),
                               "metrics": MetricRecord({"num-examples": 10})}), reply_to=msg)

@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"metrics": MetricRecord({"num-examples": 10, "loss": 1.0})}),
                   reply_to=msg)

class Fast:  # our polling exchange instead of Grid.send_and_receive (3 s sleeps)
    def __init__(self, grid): self.grid = grid
    def __getattr__(self, k): return getattr(self.grid, k)
    def send_and_receive(self, messages, *, timeout=None):
        from federation.rounds import Timing, exchange
        msgs = list(messages)
        if not msgs:
            return []
        return exchange(self.grid, msgs, quorum=len(msgs), timing=Timing(600, 600, 0.2))[0]

class Strategy(FedAvg):
    fold = False
    def configure_evaluate(self, *a):
        return [] if self.fold else super().configure_evaluate(*a)

@server.main()
def main(grid, context: Context) -> None:
    cfg = context.run_config
    s = Strategy(min_train_nodes=3, min_available_nodes=3, min_evaluate_nodes=3)
    s.fold, t = bool(cfg["fold"]), [time.time()]
    def tick(rnd, arrays):
        if rnd:
            with open(cfg["out"], "a") as f:
                f.write(json.dumps({"round": rnd, "s": time.time() - t[0]}) + "\\n")
        t[0] = time.time()
    s.start(grid=Fast(grid) if cfg["fast"] else grid, num_rounds=int(cfg["num-rounds"]),
            initial_arrays=ArrayRecord([np.zeros((64, 32), np.float32)]), evaluate_fn=tick)
    with open(cfg["out"], "a") as f:
        f.write(json.dumps({"done": True}) + "\\n")
"""}
LEVERS = (  # label, isolation, SuperNode poll patch, fast server pull, evaluation folded
    ("stock Flower 1.41 (subprocess isolation, 2 messages/round)", "subprocess", None, 0, 0),
    ("+ evaluation folded into the train reply (1 message/round)", "subprocess", None, 0, 1),
    ("+ server pulls every 0.2 s instead of 3 s", "subprocess", None, 1, 1),
    ("+ SuperNode poll patch (3 s idle sleep -> backoff 0.1-0.3 s)", "subprocess", 0.1, 1, 1),
    ("+ process isolation, warm ClientApp worker (all levers)", "process", 0.1, 1, 1),
    ("all levers but the SuperNode poll patch", "process", None, 1, 1),
    ("warm ClientApp worker alone (stock polls, 2 messages/round)", "process", None, 0, 0),
)


def levers(work: Path, n_rounds: int = 3) -> list[dict[str, Any]]:
    """Seconds per round of a stock-FedAvg toy app (3 SuperNodes) as each lever is added."""
    from federation.deployment import GatewayNode, SuperLink

    app = work / "lever_app"
    app.mkdir(parents=True, exist_ok=True)
    for name, text in _LEVER_APP.items():
        (app / name).write_text(text)
    out = []
    for k, (label, iso, poll, fast, fold) in enumerate(tqdm(LEVERS, desc="levers", leave=False)):
        log, d = work / f"lever{k}.jsonl", work / f"lever{k}"
        with SuperLink(d / "link", insecure=True) as link:
            nodes = [GatewayNode(d / f"n{i}", link.address, insecure=True, node_config={},
                                 isolation=iso, poll_s=poll, clientapp="fwlever:client",
                                 env={"PYTHONPATH": str(app)}) for i in range(3)]
            try:
                for n in nodes:
                    n.launch()
                for n in nodes:
                    n.ready()
                for n in nodes:
                    n.warm()
                link.control.submit({"num-rounds": n_rounds, "fast": bool(fast),
                                     "fold": bool(fold), "out": str(log)}, app_dir=app)
                deadline = time.monotonic() + 900
                while '"done"' not in (log.read_text() if log.exists() else ""):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"lever {label!r}: no result after 900 s")
                    time.sleep(0.5)
            finally:
                for n in nodes:
                    n.stop()
        secs = [json.loads(x)["s"] for x in log.read_text().splitlines() if '"s"' in x]
        out.append({"lever": label, "s_per_round": secs,
                    "s_per_round_median": statistics.median(secs[1:] or secs)})
    return out


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

