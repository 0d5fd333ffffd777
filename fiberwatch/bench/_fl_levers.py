"""The levers part of `fiberwatch.bench.fl`: why a stock Flower round is slow, measured with a
toy stock-FedAvg app (torch in the ClientApp, 3 SuperNodes) as each lever is added.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

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
        from federation.flower.rounds import Timing, exchange
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
    from federation.flower.deployment import GatewayNode, SuperLink, start_all

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
                start_all(nodes)
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
