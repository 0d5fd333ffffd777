"""The gateway's Flower ClientApp: trains on the gateway's normal-window buffer.

Node config (``flower-supernode --node-config``, per gateway)::

    gateway-id     = "well-a/gw1"        # for logs and metrics
    normal-buffer  = "/var/lib/.../normal.fwnb"   # edge_agent.normal_buffer file
    partition-id   = 0                   # bench only: which simulated partition it holds
    attack         = "none"              # bench/tests only: "scale:K", "flip:K", "noise:K"
    hang-from      = 0                   # tests only: from this round on, never reply
    hang-marker    = ""                  # tests only: file created when the hang starts

Messages (see `federation.rounds`): ``query.stats`` -> feature statistics; ``train`` -> the
global weights in (``config["weights"]``, one float32 blob), a compressed delta out in one
ConfigRecord ``reply`` (`federation.compression`), with the held-out loss of the received
model folded in (no separate evaluate round); ``evaluate.errors`` and
``evaluate.histogram`` -> calibration statistics of the final model. Raw rows never leave:
only weights, statistics and histograms do. At most ``max-rows`` of the most recent rows are
read; every 5th row is held out for evaluation.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federation import compression, task

log = logging.getLogger(__name__)
app = ClientApp()
HOLDOUT_EVERY = 5


def _cfg(msg: Message, context: Context, key: str, default: object) -> object:
    cfg = msg.content.config_records.get("config", ConfigRecord())
    return cfg.get(key, context.run_config.get(key, default))


def _rows(msg: Message, context: Context) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) from this gateway's normal buffer."""
    from edge_agent.normal_buffer import NormalBuffer

    path = str(context.node_config.get("normal-buffer", ""))
    if not path:
        raise ValueError("node config has no 'normal-buffer' (path of the gateway's buffer)")
    max_rows = int(_cfg(msg, context, "max-rows", 4000))  # type: ignore[call-overload]
    buf = NormalBuffer.open_readonly(path)
    try:
        rows = buf.read(max_rows)
    finally:
        buf.close()
    min_rows = int(_cfg(msg, context, "min-rows", 50))  # type: ignore[call-overload]
    if len(rows) < min_rows:
        raise ValueError(f"{len(rows)} normal rows in the buffer, need at least {min_rows}")
    held = np.arange(len(rows)) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    return rows[~held], rows[held]


def _model(msg: Message, context: Context, dim: int) -> task.AutoEncoder:
    """The model the server sent (one packed float32 blob, `compression.pack_weights`)."""
    model = task.build_model(dim, arch=str(context.run_config.get("arch", "ae-32-8")))
    shapes = [w.shape for w in task.get_weights(model)]
    blob = msg.content.config_records["config"]["weights"]
    task.set_weights(model, compression.unpack_weights(blob, shapes))  # type: ignore[arg-type]
    return model


def _attack(delta: list[np.ndarray], spec: str, seed: int) -> list[np.ndarray]:
    """Bench/tests only: a poisoned or broken gateway's update."""
    kind, _, k = spec.partition(":")
    f = float(k or 1.0)
    if kind == "scale":
        return [d * f for d in delta]
    if kind == "flip":
        return [-f * d for d in delta]
    if kind == "noise":
        rng = np.random.default_rng(seed)
        return [d + f * rng.standard_normal(d.shape).astype(np.float32) for d in delta]
    return delta


def warmup() -> None:
    """Called once by the long-lived worker (`federation.node_runtime`) before any message:
    the first optimiser step imports torch internals for seconds."""
    rows = np.zeros((16, 4), np.float32)
    task.fit(task.build_model(4), rows, epochs=1, lr=1e-3, batch_size=8)
    task.evaluate(task.build_model(4), rows)


@app.query("stats")
def stats(msg: Message, context: Context) -> Message:
    train, _ = _rows(msg, context)
    s = task.feature_stats(train)
    metrics = MetricRecord({"count": s["count"], "num-examples": s["count"],
                            **{k: [float(v) for v in s[k]] for k in ("mean", "m2", "min", "max")}})
    return Message(RecordDict({"stats": metrics}), reply_to=msg)


def _hang_if_asked(context: Context, rnd: int) -> None:
    """Tests only: a gateway stuck mid-round (the test kills it while it hangs here)."""
    start = int(context.node_config.get("hang-from", 0))
    if start and rnd >= start:
        if marker := str(context.node_config.get("hang-marker", "")):
            open(marker, "w").close()  # noqa: SIM115 - an empty marker file
        threading.Event().wait()


@app.train()
def train(msg: Message, context: Context) -> Message:
    t0 = time.perf_counter()
    _hang_if_asked(context, int(_cfg(msg, context, "server-round", 0)))  # type: ignore[call-overload]
    rows, held = _rows(msg, context)
    model = _model(msg, context, rows.shape[1])
    start = task.get_weights(model)
    before = task.evaluate(model, held)  # the received (global) model, on held-out rows
    rnd = int(_cfg(msg, context, "server-round", 0))  # type: ignore[call-overload]
    seed = rnd * 1000 + int(context.node_id % 1000)
    frac = float(_cfg(msg, context, "local-fraction", 1.0))  # type: ignore[arg-type]
    if 0 < frac < 1:  # less local work per round: less client drift on non-IID data
        pick = np.random.default_rng(seed).permutation(len(rows))[:max(1, int(frac * len(rows)))]
        rows = rows[np.sort(pick)]
    fitted = task.fit(
        model, rows, epochs=int(_cfg(msg, context, "epochs", 1)),  # type: ignore[call-overload]
        lr=float(_cfg(msg, context, "lr", 3e-3)),  # type: ignore[arg-type]
        batch_size=int(_cfg(msg, context, "batch-size", 128)),  # type: ignore[call-overload]
        proximal_mu=float(_cfg(msg, context, "proximal-mu", 0.0)),  # type: ignore[arg-type]
        global_weights=start, seed=seed)
    delta = [b - a for a, b in zip(start, task.get_weights(model), strict=True)]
    delta = _attack(delta, str(context.node_config.get("attack", "none")), rnd)
    scheme = str(_cfg(msg, context, "codec", compression.DEFAULT_SCHEME))
    blob, meta = compression.encode(delta, scheme)
    reply = ConfigRecord({  # one record: every Flower object costs a request per hop
        "update": blob, **meta.to_config(),  # type: ignore[dict-item]
        "num-examples": int(fitted["n"]), "train_loss": float(fitted["loss"]),
        "eval_loss": float(before["loss"]), "eval_n": int(before["n"]),
        "score_p99": float(before["score_p99"]), "payload_bytes": len(blob),
        "train_s": time.perf_counter() - t0})
    content = RecordDict({"reply": reply})
    log.info("trained gateway=%s round=%d rows=%d loss=%.4f seconds=%.3f",
             context.node_config.get("gateway-id", "?"), rnd, len(rows), fitted["loss"],
             time.perf_counter() - t0)
    return Message(content, reply_to=msg)


@app.evaluate("errors")
def errors(msg: Message, context: Context) -> Message:
    rows, held = _rows(msg, context)
    model = _model(msg, context, rows.shape[1])
    e = task.error_stats(model, rows)
    metrics = MetricRecord({"count": e["count"], "sq_sum": [float(v) for v in e["sq_sum"]],
                            "loss": float(task.evaluate(model, held)["loss"]),
                            "num-examples": e["count"]})
    return Message(RecordDict({"errors": metrics}), reply_to=msg)


@app.evaluate("histogram")
def histogram(msg: Message, context: Context) -> Message:
    from federation.package import score_histogram

    rows, held = _rows(msg, context)
    model = _model(msg, context, rows.shape[1])
    hist = score_histogram(task.score_rows(model, np.concatenate([rows, held])))
    return Message(RecordDict({"histogram": MetricRecord(
        {"hist": [int(v) for v in hist], "num-examples": len(rows) + len(held)})}),
        reply_to=msg)

