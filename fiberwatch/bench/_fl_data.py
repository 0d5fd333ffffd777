"""Data for `fiberwatch.bench.fl`: the five gateways' normal buffers, the evaluation set, and
the peers the federated model is judged against (a central model, an untrained floor).

Five simulated gateways that differ (three wells and two pipelines, different flows and
seeds: non-IID), each with its own normal-window buffer of anomaly-free DAS feature rows; the
evaluation set is simulated separately with leaks, sand and slugging on both geometries.
"""

from __future__ import annotations

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
    from federation.model.datasets import simulate
    from sensors_sim.config import Scenario, SimConfig

    def span(lo: float, hi: float) -> dict[str, Any]:
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
    from federation.model.datasets import DAS_SPEC

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
    from federation.model import task

    t0 = time.perf_counter()
    model, _ = task.prepare_and_fit(np.concatenate(data["rows"]), epochs=epochs, lr=3e-3,
                                    batch_size=128)
    auc = task.roc_auc(task.score_rows(model, data["eval_rows"]), data["eval_labels"])
    return {"auc": auc, "epochs": epochs, "seconds": time.perf_counter() - t0}


def untrained_auc(data: dict[str, Any]) -> float:
    """The floor: normalisation and error scale only, no training (z-score detector)."""
    from federation.model import task

    rows = np.concatenate(data["rows"])
    model = task.build_model(rows.shape[1])
    task.set_normalization(model, *task.stats_mean_std(task.feature_stats(rows)))
    task.set_error_scale(model, task.error_scale(model, rows))
    return task.roc_auc(task.score_rows(model, data["eval_rows"]), data["eval_labels"])
