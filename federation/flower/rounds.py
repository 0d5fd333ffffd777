"""The server's side of a federated run, message by message.

A run is: wait for ``min_nodes`` SuperNodes, one ``query.stats`` message per node (the
clients' `task.feature_stats`, combined exactly on the server: the global model's
normalisation, and the int8 calibration rows are later synthesised from it), ``num_rounds``
train rounds (one message per node and round: evaluation of the received model is folded
into the train reply), then two calibration messages on the final model
(``evaluate.errors``: per-feature residual statistics -> error scale; ``evaluate.histogram``:
score histograms -> thresholds).

`exchange` replaces `Grid.send_and_receive`, which sleeps a fixed 3 s between pulls in flwr
1.41: it polls every ``poll_s`` and gives up on stragglers ``grace_s`` after the quorum is in
(or at ``round_timeout_s``): a gateway that drops out mid-round costs the round that grace,
and is logged and counted as a failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from federation.flower import compression
from federation.flower.strategies import CompressedFedAvg

log = logging.getLogger(__name__)


class QuorumError(RuntimeError):
    """Fewer nodes answered than the configured minimum."""


@dataclass(frozen=True)
class Timing:
    round_timeout_s: float = 120.0
    grace_s: float = 2.0
    poll_s: float = 0.05
    wait_nodes_s: float = 120.0


@dataclass
class RoundReport:
    round: int
    participants: int
    failures: int
    loss: float  # clients' held-out loss of the model they received this round (weighted)
    train_loss: float
    bytes_up: int  # per participating client, as moved by Flower (compressed delta)
    bytes_up_fp32: int  # the same reply carrying fp32 full weights (the fair reference)
    bytes_up_flower_fp32: int  # fp32 full weights as a stock Flower ArrayRecord (FedAvg's)
    bytes_down: int  # per client
    duration_s: float
    t_end_ns: int
    auc: float | None = None
    applied: bool = True
    failed_nodes: dict[str, str] = field(default_factory=dict)
    model_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InProcessGrid(Grid):
    """A Grid whose nodes are a ClientApp called in this process (tests, benchmarks): the same
    messages, strategies and codecs as a deployment, without the transport. Nodes in ``drop``
    never reply (a gateway that died mid-round)."""

    def __init__(self, app: Any, node_configs: dict[int, dict[str, Any]],
                 run_config: dict[str, Any], *, drop: Iterable[int] = ()) -> None:
        from flwr.app import Context
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
        self.app, self.drop = app, set(drop)
        self.contexts = {n: Context(run_id=1, node_id=n, node_config=dict(c), state=RecordDict(),
                                    run_config=dict(run_config)) for n, c in node_configs.items()}
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Any) -> None:
        del run

    @property
    def run(self) -> Any:
        raise NotImplementedError("InProcessGrid has no Run")

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        from flwr.app import Error

        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = m.object_id
            ids.append(m.object_id)
            node = m.metadata.dst_node_id
            if node in self.drop:
                continue
            try:
                self._replies[m.object_id] = self.app(message=m, context=self.contexts[node])
            except Exception as exc:  # noqa: BLE001 - a failing client becomes an error reply
                self._replies[m.object_id] = Message(Error(1, repr(exc)), reply_to=m)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def exchange(grid: Grid, messages: Iterable[Message], *, quorum: int, timing: Timing,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> tuple[list[Message], list[int]]:
    """Push ``messages``, pull replies until all are in, or ``grace_s`` after ``quorum``
    good replies, or ``round_timeout_s``. Returns ``(replies, node ids that never replied)``."""
    msgs = list(messages)
    ids = list(grid.push_messages(msgs))
    dst = {i: m.metadata.dst_node_id for i, m in zip(ids, msgs, strict=True) if i}
    missing_push = [m.metadata.dst_node_id for i, m in zip(ids, msgs, strict=True) if not i]
    pending, replies = set(dst), []
    t0 = clock()
    quorum_at: float | None = None
    while pending:
        for r in grid.pull_messages(list(pending)):
            pending.discard(r.metadata.reply_to_message_id)
            replies.append(r)
        now = clock()
        if quorum_at is None and sum(not r.has_error() for r in replies) >= quorum:
            quorum_at = now
        if not pending or now - t0 >= timing.round_timeout_s:
            break
        if quorum_at is not None and now - quorum_at >= max(timing.grace_s, quorum_at - t0):
            break
        sleep(timing.poll_s)
    return replies, missing_push + [dst[i] for i in pending]


def wait_for_nodes(grid: Grid, n: int, timing: Timing,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> list[int]:
    deadline = clock() + timing.wait_nodes_s
    while len(nodes := sorted(grid.get_node_ids())) < n:
        if clock() >= deadline:
            raise QuorumError(f"{len(nodes)} SuperNodes connected after {timing.wait_nodes_s:.0f}"
                              f" s, the run needs {n}")
        sleep(max(timing.poll_s, 0.1))
    return nodes


def broadcast(grid: Grid, nodes: Sequence[int], message_type: str, content: RecordDict, *,
              quorum: int, timing: Timing) -> list[Message]:
    """Same content to every node; the good replies (at least ``quorum``, else QuorumError)."""
    msgs = [Message(content=content, message_type=message_type, dst_node_id=n) for n in nodes]
    replies, missing = exchange(grid, msgs, quorum=quorum, timing=timing)
    good = [r for r in replies if not r.has_error()]
    for r in replies:
        if r.has_error():
            log.warning("client failed type=%s node=%d reason=%s", message_type,
                        r.metadata.src_node_id, r.error.reason)
    for n in missing:
        log.warning("client dropped out type=%s node=%d", message_type, n)
    if len(good) < quorum:
        raise QuorumError(f"{message_type}: {len(good)} good replies, need {quorum}")
    return good


def federated_stats(grid: Grid, nodes: Sequence[int], *, quorum: int, timing: Timing
                    ) -> dict[str, Any]:
    """Combined `task.feature_stats` of the clients' normal rows (no rows leave a gateway)."""
    from federation.model.task import combine_stats

    replies = broadcast(grid, nodes, f"{MessageType.QUERY}.stats", RecordDict(
        {"config": ConfigRecord({"phase": "stats"})}), quorum=quorum, timing=timing)
    return combine_stats([_stats(dict(r.content.metric_records["stats"])) for r in replies])


def _stats(m: dict[str, Any]) -> dict[str, Any]:
    return {"count": int(m["count"]), **{k: list(m[k]) for k in ("mean", "m2", "min", "max")}}


def train_rounds(strategy: CompressedFedAvg, grid: Grid, arrays: ArrayRecord, num_rounds: int,
                 *, timing: Timing, on_round: Callable[[RoundReport, ArrayRecord], None]
                 ) -> ArrayRecord:
    """Run ``num_rounds`` train rounds; a round below quorum leaves the model unchanged."""
    for rnd in range(1, num_rounds + 1):
        t0 = time.perf_counter()
        messages = list(strategy.configure_train(rnd, arrays, ConfigRecord(), grid))
        down = compression.wire_bytes(strategy.down_record)
        replies, missing = exchange(grid, messages, quorum=strategy.min_train_nodes,
                                    timing=timing)
        new, agg = strategy.aggregate_train(rnd, replies)
        used = strategy.last.used
        failed = {str(n): why for n, why in strategy.last.rejected.items()}
        for n in missing:
            failed[str(n)] = "no reply (dropped out)"
            log.warning("client dropped out round=%d node=%d", rnd, n)
        applied = new is not None and len(used) >= strategy.min_train_nodes
        if new is not None and applied:
            arrays = new
        else:
            log.warning("round below quorum round=%d good=%d need=%d model=unchanged",
                        rnd, len(used), strategy.min_train_nodes)
        m: dict[str, Any] = dict(agg) if agg is not None else {}
        report = RoundReport(
            round=rnd, participants=len(used), failures=len(failed),
            loss=float(m.get("eval_loss", float("nan"))),
            train_loss=float(m.get("train_loss", float("nan"))),
            bytes_up=int(np.mean([u.bytes_up for u in used])) if used else 0,
            bytes_up_fp32=int(np.mean([u.bytes_fp32 for u in used])) if used else 0,
            bytes_up_flower_fp32=compression.wire_bytes(ArrayRecord(strategy.global_weights)),
            bytes_down=down, duration_s=time.perf_counter() - t0, t_end_ns=time.time_ns(),
            applied=applied, failed_nodes=failed)
        on_round(report, arrays)
    return arrays


def _weights_msg(arrays: ArrayRecord, phase: str) -> RecordDict:
    return RecordDict({"config": ConfigRecord({
        "phase": phase, "weights": compression.pack_weights(arrays.to_numpy_ndarrays())})})


def calibrate(grid: Grid, nodes: Sequence[int], arrays: ArrayRecord, *, quorum: int,
              timing: Timing, set_error_scale: Callable[[ArrayRecord, np.ndarray], ArrayRecord]
              ) -> tuple[ArrayRecord, list[list[int]], float]:
    """Error scale and score histograms of the final model, from the clients' rows.

    Returns ``(arrays with the error scale set, histograms, held-out loss)``."""
    from federation.model.task import error_scale_from_stats

    replies = broadcast(grid, nodes, f"{MessageType.EVALUATE}.errors", _weights_msg(
        arrays, "errors"), quorum=quorum, timing=timing)
    ms: list[dict[str, Any]] = [dict(r.content.metric_records["errors"]) for r in replies]
    scale = error_scale_from_stats([{"count": int(m["count"]), "sq_sum": list(m["sq_sum"])}
                                    for m in ms])
    n = sum(int(m["count"]) for m in ms)
    loss = sum(float(m["loss"]) * int(m["count"]) for m in ms) / max(n, 1)
    arrays = set_error_scale(arrays, scale)
    replies = broadcast(grid, nodes, f"{MessageType.EVALUATE}.histogram", _weights_msg(
        arrays, "histogram"), quorum=quorum, timing=timing)
    hists: list[list[int]] = [list(cast(list[int], r.content.metric_records["histogram"]["hist"]))
                              for r in replies]
    return arrays, hists, loss
