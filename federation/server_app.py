"""The cloud's Flower ServerApp: statistics, rounds, calibration, then the model lifecycle.

Run config (``[tool.flwr.app.config]`` in ``federation/flwr_app/pyproject.toml``, overridden
with ``flwr run --run-config`` / ``fiberwatch fl run --set``) is read into `Settings`. After
every round the metrics go to InfluxDB (`federation.metrics_sink`, when ``influx-url`` is set)
and to ``results-dir/rounds.jsonl``; after the last round the model is calibrated from the
clients' statistics and, with ``registry-dir`` set, converted to int8 (calibration rows
synthesised from the combined feature statistics: `federation.convert.synth_rows`), packaged,
signed and added to the registry as a ``candidate`` for `federation.rollout`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from edge_agent.logs import stderr_handler
from federation import rounds, strategies, task

log = logging.getLogger(__name__)
app = ServerApp()


@dataclass(frozen=True)
class Settings:
    num_rounds: int = 5
    strategy: str = "fedavg"
    codec: str = "int8"
    min_nodes: int = 2
    fraction_train: float = 1.0
    epochs: int = 2
    local_fraction: float = 1.0
    lr: float = 3e-3
    batch_size: int = 128
    max_rows: int = 4000
    min_rows: int = 50
    proximal_mu: float = 0.01
    trim: float = 0.2
    byzantine: int = 2
    arch: str = "ae-32-8"
    seed: int = 0
    stream: str = "das"
    round_timeout_s: float = 120.0
    grace_s: float = 2.0
    poll_s: float = 0.05
    wait_nodes_s: float = 120.0
    influx_url: str = ""
    registry_dir: str = ""
    signing_key: str = ""
    eval_set: str = ""
    results_dir: str = ""

    @classmethod
    def from_run_config(cls, cfg: dict[str, Any]) -> Settings:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key in cfg:
                kw[f.name] = type(getattr(cls, f.name))(cfg[key])
        return cls(**kw)

    def strategy_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "codec": self.codec, "min_train_nodes": self.min_nodes,
            "min_available_nodes": self.min_nodes, "fraction_train": self.fraction_train,
            "train_config": {"epochs": self.epochs, "lr": self.lr, "batch-size": self.batch_size,
                             "max-rows": self.max_rows, "min-rows": self.min_rows,
                             "local-fraction": self.local_fraction}}
        extra = {"fedprox": {"proximal_mu": self.proximal_mu}, "trimmed-mean": {"trim": self.trim},
                 "krum": {"byzantine": self.byzantine}}
        return {**kw, **extra.get(self.strategy, {})}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


class Evaluator:
    """AUC of a weights list on the server's public evaluation set (simulator-made)."""

    def __init__(self, path: str, dim: int, arch: str) -> None:
        with np.load(path) as z:
            self.rows, self.labels = z["rows"].astype(np.float32), z["labels"].astype(bool)
        self.dim, self.arch = dim, arch

    def auc(self, arrays: ArrayRecord) -> float:
        model = task.build_model(self.dim, arch=self.arch)
        task.set_weights(model, arrays.to_numpy_ndarrays())
        return roc_auc(task.score_rows(model, self.rows), self.labels)


def _with_error_scale(dim: int, arch: str):  # noqa: ANN202
    def apply(arrays: ArrayRecord, scale: np.ndarray) -> ArrayRecord:
        model = task.build_model(dim, arch=arch)
        task.set_weights(model, arrays.to_numpy_ndarrays())
        task.set_error_scale(model, scale)
        return ArrayRecord(task.get_weights(model))
    return apply


def publish_candidate(s: Settings, model: task.AutoEncoder, stats: dict, hists: list,
                      summary: dict[str, Any], run_id: int) -> str:
    """int8 convert, package, sign, add to the registry as a candidate; the version."""
    from federation.datasets import DAS_SPEC, DTS_SPEC
    from federation.keys import load_private
    from federation.package import package_model, quantiles_from_histograms
    from federation.registry import Registry

    spec = DAS_SPEC if s.stream == "das" else DTS_SPEC
    registry = Registry(Path(s.registry_dir))
    prod = registry.production()
    key = load_private(s.signing_key) if s.signing_key else None
    pkg, report = package_model(
        model, spec, stats=stats, threshold_quantiles=quantiles_from_histograms(hists),
        private_key=key, version=f"{s.stream}-fl-{run_id}", parent=prod.version if prod else None,
        training={"federated": {"run_id": run_id, "strategy": s.strategy, "codec": s.codec,
                                "rounds": s.num_rounds, "calibration": "synth_rows(stats)"}},
        evaluation=summary)
    rec = registry.add(pkg, state="candidate", metrics={**summary, "source": "federated"})
    log.warning("candidate added version=%s package_bytes=%d", rec.version,
                report["package_bytes"])
    return rec.version


def _log_to_stderr() -> None:
    """Our INFO lines (one per round) into the ServerApp's output, which `flwr log` shows."""
    fed = logging.getLogger("federation")
    if not fed.handlers:
        fed.addHandler(stderr_handler())
        fed.setLevel(logging.INFO)


@app.main()
def main(grid: Grid, context: Context) -> None:
    s = Settings.from_run_config(dict(context.run_config))
    _log_to_stderr()
    strategy = strategies.build(s.strategy, **s.strategy_kwargs())
    timing = rounds.Timing(s.round_timeout_s, s.grace_s, s.poll_s, s.wait_nodes_s)
    out = Path(s.results_dir) if s.results_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    nodes = rounds.wait_for_nodes(grid, s.min_nodes, timing)
    stats = rounds.federated_stats(grid, nodes, quorum=s.min_nodes, timing=timing)
    dim = len(stats["mean"])
    model = task.build_model(dim, arch=s.arch, seed=s.seed)
    task.set_normalization(model, *task.stats_mean_std(stats))
    evaluator = Evaluator(s.eval_set, dim, s.arch) if s.eval_set else None
    sink = None
    if s.influx_url:
        from federation.metrics_sink import MetricsSink

        sink = MetricsSink(s.influx_url)

    def on_round(report: rounds.RoundReport, arrays: ArrayRecord) -> None:
        report.auc = evaluator.auc(arrays) if evaluator else None
        report.model_version = f"{s.stream}-fl-{context.run_id}-r{report.round}"
        if sink:
            sink.write_round(report, run_id=str(context.run_id), strategy=s.strategy)
        if out:
            with (out / "rounds.jsonl").open("a") as f:
                f.write(json.dumps(report.to_dict()) + "\n")
        log.info("round done round=%d participants=%d failures=%d loss=%.4f seconds=%.2f",
                 report.round, report.participants, report.failures, report.loss,
                 report.duration_s)

    arrays = rounds.train_rounds(strategy, grid, ArrayRecord(task.get_weights(model)),
                                 s.num_rounds, timing=timing, on_round=on_round)
    arrays, hists, loss = rounds.calibrate(grid, sorted(grid.get_node_ids()), arrays,
                                           quorum=s.min_nodes, timing=timing,
                                           set_error_scale=_with_error_scale(dim, s.arch))
    task.set_weights(model, arrays.to_numpy_ndarrays())
    summary: dict[str, Any] = {"eval_loss": loss, "strategy": s.strategy, "codec": s.codec,
                               "rounds": s.num_rounds, "run_id": context.run_id}
    if evaluator:
        summary["auc"] = evaluator.auc(arrays)
    if out:
        np.savez(out / "final_weights.npz", *arrays.to_numpy_ndarrays())
    if s.registry_dir:
        summary["version"] = publish_candidate(s, model, stats, hists, dict(summary),
                                               context.run_id)
    if out:
        (out / "summary.json").write_text(json.dumps({**summary, "stats": stats}))
    log.info("run done %s", " ".join(f"{k}={v}" for k, v in summary.items()))
