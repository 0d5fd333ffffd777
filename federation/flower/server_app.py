"""The cloud's Flower ServerApp: statistics, rounds, calibration, then the model lifecycle.

Run config (``[tool.flwr.app.config]`` in ``federation/flower/flwr_app/pyproject.toml``, overridden
with ``flwr run --run-config`` / ``fiberwatch fl run --set``) is read into `Settings`. After
every round the metrics go to InfluxDB (`federation.flower.metrics_sink`, when ``influx-url`` is
set) and to ``results-dir/rounds.jsonl``; after the last round the model is calibrated from the
clients' statistics and, with ``registry-dir`` set, converted to int8 (calibration rows
synthesised from the combined feature statistics: `federation.model.convert.synth_rows`), packaged,
signed and added to the registry as a ``candidate`` for `federation.registry.rollout`
(`federation.registry.publish`).

Thin, as in Flower's templates: the model work is `federation.model.task`'s, the round loop
`federation.flower.rounds`', the strategies `federation.flower.strategies`'.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from edge_agent.logs import stderr_handler
from federation.flower import label_round, rounds, strategies
from federation.model import task
from federation.registry import publish

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
    init_weights: str = ""  # continue from this model (.npz of arrays): a label round
    label_share: float = 0.5  # labelled false-alarm rows: this share of the training rows
    label_level: float = 0.9999  # the label report's threshold: this score quantile

    @classmethod
    def from_run_config(cls, cfg: dict[str, Any]) -> Settings:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key in cfg:
                kw[f.name] = type(getattr(cls, f.name))(cfg[key])
        task.check_federated_arch(str(kw.get("arch", cls.arch)))
        return cls(**kw)

    def strategy_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "codec": self.codec, "min_train_nodes": self.min_nodes,
            "min_available_nodes": self.min_nodes, "fraction_train": self.fraction_train,
            "train_config": {"epochs": self.epochs, "lr": self.lr, "batch-size": self.batch_size,
                             "max-rows": self.max_rows, "min-rows": self.min_rows,
                             "local-fraction": self.local_fraction,
                             "label-share": self.label_share}}
        extra: dict[str, dict[str, Any]] = {
            "fedprox": {"proximal_mu": self.proximal_mu}, "trimmed-mean": {"trim": self.trim},
            "krum": {"byzantine": self.byzantine}}
        return {**kw, **extra.get(self.strategy, {})}


def _log_to_stderr() -> None:
    """Our INFO lines (one per round) into the ServerApp's output, which `flwr log` shows."""
    fed = logging.getLogger("federation")
    if not fed.handlers:
        fed.addHandler(stderr_handler())
        fed.setLevel(logging.INFO)


def _round_writer(s: Settings, run_id: int, evaluator: task.Evaluator | None, sink: Any,
                  out: Path | None, last: list[rounds.RoundReport]
                  ) -> Callable[[rounds.RoundReport, ArrayRecord], None]:
    def on_round(report: rounds.RoundReport, arrays: ArrayRecord) -> None:
        report.auc = evaluator.auc(arrays) if evaluator else None
        report.model_version = f"{s.stream}-fl-{run_id}-r{report.round}"
        last[:] = [report]
        if sink:
            sink.write_round(report, run_id=str(run_id), strategy=s.strategy)
        if out:
            with (out / "rounds.jsonl").open("a") as f:
                f.write(json.dumps(report.to_dict()) + "\n")
        log.info("round done round=%d participants=%d failures=%d loss=%.4f seconds=%.2f",
                 report.round, report.participants, report.failures, report.loss,
                 report.duration_s)
    return on_round


def _start_model(s: Settings, stats: dict[str, Any]) -> task.AutoEncoder:
    """A fresh model normalised by the clients' statistics, or the ``init-weights`` one."""
    model = task.build_model(len(stats["mean"]), arch=s.arch, seed=s.seed)
    task.set_normalization(model, *task.stats_mean_std(stats))
    if s.init_weights:
        task.set_weights(model, label_round.load_weights(s.init_weights))
    return model


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
    model = _start_model(s, stats)
    start = ArrayRecord(task.get_weights(model))
    thr_before = (label_round.before_threshold(grid, nodes, start, level=s.label_level,
                                               quorum=s.min_nodes, timing=timing)
                  if s.init_weights else None)
    evaluator = task.Evaluator(s.eval_set, dim, s.arch) if s.eval_set else None
    sink = None
    if s.influx_url:
        from federation.flower.metrics_sink import MetricsSink

        sink = MetricsSink(s.influx_url)
    last: list[rounds.RoundReport] = []
    arrays = rounds.train_rounds(strategy, grid, start, s.num_rounds, timing=timing,
                                 on_round=_round_writer(s, context.run_id, evaluator, sink,
                                                        out, last))
    arrays, hists, loss = rounds.calibrate(grid, sorted(grid.get_node_ids()), arrays,
                                           quorum=s.min_nodes, timing=timing,
                                           set_error_scale=task.error_scale_setter(dim, s.arch))
    task.set_weights(model, arrays.to_numpy_ndarrays())
    summary: dict[str, Any] = {"eval_loss": loss, "strategy": s.strategy, "codec": s.codec,
                               "rounds": s.num_rounds, "run_id": context.run_id}
    if thr_before is not None:
        summary["labels"] = label_round.label_effect(
            grid, sorted(grid.get_node_ids()), start, arrays, quorum=s.min_nodes, timing=timing,
            thresholds=(thr_before, label_round.threshold(hists, s.label_level)),
            level=s.label_level)
        if sink and last:
            sink.write_labels(last[-1], summary["labels"], run_id=str(context.run_id),
                              strategy=s.strategy)
    _finish(s, context.run_id, model, arrays, stats, hists, summary, evaluator, out)


def _finish(s: Settings, run_id: int, model: task.AutoEncoder, arrays: ArrayRecord,
            stats: dict[str, Any], hists: list[list[int]], summary: dict[str, Any],
            evaluator: task.Evaluator | None, out: Path | None) -> None:
    """AUC, the weights, the registry candidate and ``summary.json``."""
    if evaluator:
        summary["auc"] = evaluator.auc(arrays)
    if out:
        np.savez(out / "final_weights.npz", *arrays.to_numpy_ndarrays())
    if s.registry_dir:
        summary["version"] = publish.publish_candidate(
            Path(s.registry_dir), model, stats, hists, dict(summary), stream=s.stream,
            run_id=run_id, signing_key=s.signing_key,
            training={"strategy": s.strategy, "codec": s.codec, "rounds": s.num_rounds,
                      "init_weights": bool(s.init_weights)})
    if out:
        (out / "summary.json").write_text(json.dumps({**summary, "stats": stats}))
    log.info("run done %s", " ".join(f"{k}={v}" for k, v in summary.items()))
