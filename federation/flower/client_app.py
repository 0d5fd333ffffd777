"""The gateway's Flower ClientApp: trains on the gateway's normal-window buffer.

Thin, as in Flower's templates: each handler reads its config, calls `federation.model.task`
(`load_data`, `local_update`, ...) and packs the reply.

Node config (``flower-supernode --node-config``, per gateway)::

    gateway-id     = "well-a/gw1"        # for logs and metrics
    normal-buffer  = "/var/lib/.../normal.fwnb"   # edge_agent.normal_buffer file
    labels         = "/var/lib/.../labels.db"     # edge_agent.labels file (optional)

Messages (see `federation.flower.rounds`): ``query.stats`` -> feature statistics; ``train`` -> the
global weights in (``config["weights"]``, one float32 blob), a compressed delta out in one
ConfigRecord ``reply`` (`federation.flower.compression`), with the held-out loss of the received
model folded in (no separate evaluate round); ``evaluate.errors`` and
``evaluate.histogram`` -> calibration statistics of the final model (normal rows only: the
labelled false alarms feed the error scale, not the thresholds); ``evaluate.labels`` -> what
the labels changed (`federation.model.labelled.label_effect`). With a ``labels`` file the
training rows gain the operator's false alarms and lose labelled anomalies/maintenance.
Raw rows never leave: only weights, statistics, histograms and counts do. At most
``max-rows`` of the most recent rows are read; every 5th row is held out for evaluation
(`task.HOLDOUT_EVERY`).

`build_app` takes `ClientHooks`: the benchmarks and tests build misbehaving gateways with it
(`fiberwatch.bench._fl_apps`); the shipped `app` has none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federation.flower import compression
from federation.model import labelled, task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientHooks:
    """Test and benchmark seams: ``before_train(context, round)`` runs first in a train
    message; ``on_update(delta, context, round)`` may replace the update sent back."""

    before_train: Callable[[Context, int], None] | None = None
    on_update: Callable[[list[np.ndarray], Context, int], list[np.ndarray]] | None = None


def _value(msg: Message, context: Context, key: str, default: float | str) -> object:
    """``key`` from the message's config, else the run config, else ``default``."""
    cfg = msg.content.config_records.get("config", ConfigRecord())
    return cfg.get(key, context.run_config.get(key, default))


def _num(msg: Message, context: Context, key: str, default: float) -> float:
    value = _value(msg, context, key, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"config {key!r}: expected a number, got {type(value).__name__}")
    return float(value)


def _int(msg: Message, context: Context, key: str, default: int) -> int:
    return int(_num(msg, context, key, default))


def _data(msg: Message, context: Context) -> labelled.LocalData:
    """This gateway's rows: its normal buffer, plus what its operator labels add
    (``labels`` node config: `edge_agent.labels.LabelBook` file; `federation.model.labelled`)."""
    labels, stream = str(context.node_config.get("labels", "")), \
        str(context.run_config.get("stream", "das"))
    rows, dropped = task.read_normal(str(context.node_config.get("normal-buffer", "")),
                                     max_rows=_int(msg, context, "max-rows", 4000),
                                     exclude=labelled.exclusions(labels, stream))
    train, held = task.split_held(rows, min_rows=_int(msg, context, "min-rows", 50))
    return labelled.local_data(train, held, labels, stream=stream,
                               label_share=_num(msg, context, "label-share", 0.5),
                               excluded=dropped)


def _rows(msg: Message, context: Context) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) from this gateway's normal buffer and labels."""
    data = _data(msg, context)
    return data.train, data.held


def _model(msg: Message, context: Context, dim: int, key: str = "weights") -> task.AutoEncoder:
    """The model the server sent (one packed float32 blob, `compression.pack_weights`)."""
    arch = str(context.run_config.get("arch", "ae-32-8"))
    task.check_federated_arch(arch)
    model = task.build_model(dim, arch=arch)
    shapes = [w.shape for w in task.get_weights(model)]
    blob = msg.content.config_records["config"][key]
    if not isinstance(blob, bytes):
        raise ValueError("config 'weights': expected one bytes blob")
    task.set_weights(model, compression.unpack_weights(blob, shapes))
    return model


def warmup() -> None:
    """Called once by the long-lived worker (`federation.flower.node_runtime`) before any message:
    the first optimiser step imports torch internals for seconds."""
    rows = np.zeros((16, 4), np.float32)
    task.fit(task.build_model(4), rows, epochs=1, lr=1e-3, batch_size=8)
    task.evaluate(task.build_model(4), rows)


def stats(msg: Message, context: Context) -> Message:
    train, _ = _rows(msg, context)
    s = task.feature_stats(train)
    metrics = MetricRecord({"count": s["count"], "num-examples": s["count"],
                            **{k: [float(v) for v in s[k]] for k in ("mean", "m2", "min", "max")}})
    return Message(RecordDict({"stats": metrics}), reply_to=msg)


def train(msg: Message, context: Context, hooks: ClientHooks = ClientHooks()) -> Message:
    t0 = time.perf_counter()
    rnd = _int(msg, context, "server-round", 0)
    if hooks.before_train is not None:
        hooks.before_train(context, rnd)
    data = _data(msg, context)
    rows, held = data.train, data.held
    model = _model(msg, context, rows.shape[1])
    up = task.local_update(
        model, rows, held, epochs=_int(msg, context, "epochs", 1),
        lr=_num(msg, context, "lr", 3e-3), batch_size=_int(msg, context, "batch-size", 128),
        proximal_mu=_num(msg, context, "proximal-mu", 0.0),
        local_fraction=_num(msg, context, "local-fraction", 1.0),
        seed=rnd * 1000 + int(context.node_id % 1000))
    delta = hooks.on_update(up.delta, context, rnd) if hooks.on_update else up.delta
    blob, meta = compression.encode(delta, str(_value(msg, context, "codec",
                                                      compression.DEFAULT_SCHEME)))
    reply = ConfigRecord({  # one record: every Flower object costs a request per hop
        "update": blob, **meta.to_config(),
        "num-examples": int(up.fitted["n"]), "train_loss": float(up.fitted["loss"]),
        "eval_loss": float(up.before["loss"]), "eval_n": int(up.before["n"]),
        "score_p99": float(up.before["score_p99"]), "payload_bytes": len(blob),
        "train_s": time.perf_counter() - t0, "fa_rows": len(data.fa_train),
        "fa_held_rows": len(data.fa_held), "excluded_rows": data.excluded})
    log.info("trained gateway=%s round=%d rows=%d loss=%.4f seconds=%.3f",
             context.node_config.get("gateway-id", "?"), rnd, up.rows, up.fitted["loss"],
             time.perf_counter() - t0)
    return Message(RecordDict({"reply": reply}), reply_to=msg)


def errors(msg: Message, context: Context) -> Message:
    data = _data(msg, context)
    rows, held = data.calibration_rows(), data.held
    model = _model(msg, context, rows.shape[1])
    e = task.error_stats(model, rows)
    metrics = MetricRecord({"count": e["count"], "sq_sum": [float(v) for v in e["sq_sum"]],
                            "loss": float(task.evaluate(model, held)["loss"]),
                            "num-examples": e["count"]})
    return Message(RecordDict({"errors": metrics}), reply_to=msg)


def histogram(msg: Message, context: Context) -> Message:
    from federation.registry.package import score_histogram

    data = _data(msg, context)
    rows = data.calibration_rows(labelled=False)
    model = _model(msg, context, rows.shape[1])
    hist = score_histogram(task.score_rows(model, rows))
    return Message(RecordDict({"histogram": MetricRecord(
        {"hist": [int(v) for v in hist], "num-examples": len(rows)})}), reply_to=msg)


def label_effect(msg: Message, context: Context) -> Message:
    """Held-back false alarms and labelled anomalies flagged by the model before the round
    (``weights-before`` at ``threshold-before``) and after it (``weights`` at ``threshold``)."""
    data = _data(msg, context)
    out: dict[str, Any] = {"num-examples": data.n_false_alarm, "excluded_rows": data.excluded}
    for prefix, key in (("before_", "weights-before"), ("after_", "weights")):
        model = _model(msg, context, data.train.shape[1], key)
        thr = _num(msg, context, f"threshold-{prefix[:-1]}", float("inf"))
        out.update(labelled.label_effect(data, lambda r, m=model: task.score_rows(m, r), thr,
                                         prefix))
    return Message(RecordDict({"labels": MetricRecord(out)}), reply_to=msg)


def build_app(hooks: ClientHooks | None = None) -> ClientApp:
    """The ClientApp with its four handlers (``hooks``: see `ClientHooks`)."""
    client = ClientApp()
    client.query("stats")(stats)
    if hooks is None:
        client.train()(train)
    else:
        client.train()(lambda msg, context: train(msg, context, hooks))
    client.evaluate("errors")(errors)
    client.evaluate("histogram")(histogram)
    client.evaluate("labels")(label_effect)
    return client


app = build_app()
