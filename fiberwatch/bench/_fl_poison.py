"""The poisoning part of `fiberwatch.bench.fl`: 2 of 10 clients send scaled or sign-flipped
updates; FedAvg vs robust strategies. It drives the same ServerApp code (`federation.flower.rounds`,
strategies, codecs) and the real ClientApp with an attack hook (`fiberwatch.bench._fl_apps`)
in process (`rounds.InProcessGrid`): it measures robustness, not transport.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def poisoning(data: dict[str, Any], work: Path, rounds_n: int, epochs: int,
              names: tuple[str, ...] = ("fedavg", "trimmed-mean", "median")) -> dict[str, Any]:
    """10 clients (each gateway's rows split in two), 2 attackers; AUC per strategy/attack."""
    from flwr.app import ArrayRecord

    from edge_agent.normal_buffer import NormalBuffer
    from federation.flower import rounds, strategies
    from federation.model import task
    from federation.model.datasets import DAS_SPEC
    from fiberwatch.bench._fl_apps import app as misbehaving_app

    cfgs: dict[int, dict[str, Any]] = {}
    for i, r in enumerate(data["rows"]):
        for j, part in enumerate((r[0::2], r[1::2])):
            path = work / f"poison-{i}-{j}.fwnb"
            with NormalBuffer(path, dim=DAS_SPEC.dim, spec_hash=DAS_SPEC.hash,
                              max_rows=20000) as b:
                b.append(part)
            cfgs[100 + 2 * i + j] = {"normal-buffer": str(path)}
    ev = task.Evaluator(str(data["eval"]), DAS_SPEC.dim, "ae-32-8")
    timing = rounds.Timing(round_timeout_s=60, grace_s=0, poll_s=0)
    out: dict[str, Any] = {}
    for attack in ("scale:10", "flip:10"):
        for name in names:
            attacked = {n: {**c, "attack": attack if n in (101, 108) else "none"}
                        for n, c in cfgs.items()}
            grid = rounds.InProcessGrid(misbehaving_app, attacked, {"arch": "ae-32-8"})
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
                                              set_error_scale=task.error_scale_setter(
                                                  DAS_SPEC.dim, "ae-32-8"))
            # AUC of the calibrated final model; loss: the clients' held-out loss of it
            out[f"{attack}/{name}"] = {"auc": ev.auc(final), "auc_per_round": aucs,
                                       "loss": loss, "loss_per_round": losses}
    return out
