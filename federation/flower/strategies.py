"""Server strategies: FedAvg over compressed deltas, FedProx, and robust aggregation.

Every strategy subclasses Flower's `FedAvg` and overrides only what differs (Flower's
``FedAvgM(FedAvg)`` shape): `CompressedFedAvg` changes the message contents (global weights
down; quantised deltas up, see `federation.flower.compression`; evaluation folded into the train
reply) and aggregates decoded deltas with `combine`; the subclasses override `combine`
(or, for FedProx, the config sent). Robust rules are unweighted, as in their papers.

=================  ======================================================================
name (run config)  rule
=================  ======================================================================
``fedavg``         mean of deltas weighted by ``num-examples``
``fedprox``        as fedavg; clients add ``proximal_mu/2 * ||w - w_global||^2``
``trimmed-mean``   per coordinate, drop the ``trim`` fraction largest and smallest, mean
``median``         per coordinate median
``krum``           Multi-Krum: mean of the ``m`` updates closest to their ``n - f - 2``
                   nearest neighbours (Blanchard et al. 2017)
=================  ======================================================================
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from federation.flower import compression

log = logging.getLogger(__name__)

Weights = list[np.ndarray]


# --- aggregation rules (pure numpy) ---------------------------------------------------------

def _flat(updates: Sequence[Weights]) -> np.ndarray:
    return np.stack([np.concatenate([np.ravel(t) for t in u]) if u else np.empty(0)
                     for u in updates]).astype(np.float64)


def _unflat(vec: np.ndarray, like: Weights) -> Weights:
    out, off = [], 0
    for t in like:
        out.append(vec[off:off + t.size].reshape(t.shape).astype(np.float32))
        off += t.size
    return out


def weighted_mean(updates: Sequence[Weights], weights: Sequence[float]) -> Weights:
    w = np.asarray(weights, np.float64)
    if len(updates) == 0 or w.sum() <= 0:
        raise ValueError("need at least one update with positive weight")
    return _unflat((w[:, None] * _flat(updates)).sum(0) / w.sum(), updates[0])


def trimmed_mean(updates: Sequence[Weights], trim: float) -> Weights:
    x = np.sort(_flat(updates), axis=0)
    k = int(trim * len(updates))
    if 2 * k >= len(updates):
        raise ValueError(f"trim {trim} leaves nothing of {len(updates)} updates")
    return _unflat(x[k:len(updates) - k].mean(0), updates[0])


def coordinate_median(updates: Sequence[Weights]) -> Weights:
    return _unflat(np.median(_flat(updates), axis=0), updates[0])


def krum_select(updates: Sequence[Weights], f: int, m: int = 1) -> list[int]:
    """Indices of the ``m`` updates with the lowest Krum score."""
    x = _flat(updates)
    n = len(x)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    k = max(n - f - 2, 1)
    scores = np.sort(d, axis=1)[:, 1:k + 1].sum(1)  # column 0 is the distance to itself
    return [int(i) for i in np.argsort(scores, kind="stable")[:max(1, min(m, n))]]


def krum(updates: Sequence[Weights], f: int, m: int = 1) -> Weights:
    chosen = krum_select(updates, f, m)
    return _unflat(_flat([updates[i] for i in chosen]).mean(0), updates[0])


# --- strategies ---------------------------------------------------------------------------

@dataclass
class Decoded:
    """One client's usable reply."""

    node_id: int
    delta: Weights
    n: int
    metrics: dict[str, Any]
    bytes_up: int  # the reply record as Flower moves it
    bytes_fp32: int  # the same reply carrying fp32 full weights instead (the reference)


@dataclass
class RoundOutcome:
    """What `CompressedFedAvg.aggregate_train` saw, for the round report."""

    used: list[Decoded] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)  # node id -> reason


class CompressedFedAvg(FedAvg):
    """FedAvg whose clients send compressed deltas and fold evaluation into the reply."""

    name = "fedavg"

    def __init__(self, *, codec: str = compression.DEFAULT_SCHEME, train_config: dict | None
                 = None, **fedavg: Any) -> None:
        super().__init__(**fedavg)
        self.codec = compression.check_scheme(codec)
        self.train_config = dict(train_config or {})
        self.global_weights: Weights = []
        self.down_record = ConfigRecord()
        self.last = RoundOutcome()

    def summary(self) -> None:
        log.info("strategy=%s codec=%s min_train_nodes=%d", self.name, self.codec,
                 self.min_train_nodes)

    def round_config(self, server_round: int) -> dict[str, Any]:
        return {**self.train_config, "codec": self.codec, "proximal-mu": 0.0,
                "server-round": server_round}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """One train message per sampled node: fp32 global weights plus the round config."""
        self.global_weights = [np.asarray(a, np.float32) for a in arrays.to_numpy_ndarrays()]
        nodes = sorted(grid.get_node_ids())
        k = min(len(nodes), max(int(len(nodes) * self.fraction_train), self.min_train_nodes))
        chosen = sorted(random.Random(server_round).sample(nodes, k))
        self.down_record = ConfigRecord({
            **dict(config), **self.round_config(server_round),
            "weights": compression.pack_weights(self.global_weights)})
        content = RecordDict({"config": self.down_record})
        return [Message(content=content, message_type=MessageType.TRAIN, dst_node_id=n)
                for n in chosen]

    def decode_reply(self, msg: Message) -> Decoded:
        """The update in a train reply: one ConfigRecord ``reply`` with the blob ``update``,
        the codec `compression.Meta` and the metrics (see `federation.flower.client_app`)."""
        record = msg.content.config_records["reply"]
        fields = dict(record)
        meta = compression.Meta.from_config(fields)
        blob = fields.pop("update")
        if not isinstance(blob, bytes):
            raise compression.CompressionError("the update is not bytes")
        delta = compression.decode(blob, meta, [w.shape for w in self.global_weights])
        if not all(np.all(np.isfinite(d)) for d in delta):
            raise compression.CompressionError("non-finite values in the update")
        metrics = {k: v for k, v in fields.items() if isinstance(v, int | float)}
        fp32 = ConfigRecord({**fields, "update": compression.pack_weights(self.global_weights)})
        return Decoded(msg.metadata.src_node_id, delta, int(metrics.get("num-examples", 0)),
                       metrics, compression.wire_bytes(record), compression.wire_bytes(fp32))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.last = RoundOutcome()
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                self.last.rejected[node] = f"error reply: {msg.error.reason}"
                continue
            try:
                self.last.used.append(self.decode_reply(msg))
            except (KeyError, ValueError) as exc:
                self.last.rejected[node] = f"bad update: {exc}"
        for node, why in self.last.rejected.items():
            log.warning("reply rejected round=%d node=%d reason=%s", server_round, node, why)
        if not self.last.used:
            return None, None
        used = self.last.used
        step = self.combine([u.delta for u in used], [max(u.n, 1) for u in used])
        new = [g + s for g, s in zip(self.global_weights, step, strict=True)]
        total = sum(max(u.n, 1) for u in used)
        agg = {k: sum(float(u.metrics.get(k, 0.0)) * max(u.n, 1) for u in used) / total
               for k in ("train_loss", "eval_loss", "score_p99")}
        agg["num-examples"] = total
        return ArrayRecord(new), MetricRecord(dict(agg))

    def combine(self, deltas: Sequence[Weights], weights: Sequence[float]) -> Weights:
        return weighted_mean(deltas, weights)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return []  # evaluation of the received model is folded into the train reply

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return None


class FedProx(CompressedFedAvg):
    name = "fedprox"

    def __init__(self, *, proximal_mu: float = 0.01, **kw: Any) -> None:
        super().__init__(**kw)
        self.proximal_mu = float(proximal_mu)

    def round_config(self, server_round: int) -> dict[str, Any]:
        return {**super().round_config(server_round), "proximal-mu": self.proximal_mu}


class TrimmedMean(CompressedFedAvg):
    name = "trimmed-mean"

    def __init__(self, *, trim: float = 0.2, **kw: Any) -> None:
        super().__init__(**kw)
        if not 0 <= trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {trim}")
        self.trim = trim

    def combine(self, deltas: Sequence[Weights], weights: Sequence[float]) -> Weights:
        k = int(self.trim * len(deltas))
        if 2 * k >= len(deltas):  # too few replies to trim: the median is the robust fallback
            return coordinate_median(deltas)
        return trimmed_mean(deltas, self.trim)


class Median(CompressedFedAvg):
    name = "median"

    def combine(self, deltas: Sequence[Weights], weights: Sequence[float]) -> Weights:
        return coordinate_median(deltas)


class Krum(CompressedFedAvg):
    name = "krum"

    def __init__(self, *, byzantine: int = 2, keep: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        self.byzantine, self.keep = int(byzantine), int(keep)

    def combine(self, deltas: Sequence[Weights], weights: Sequence[float]) -> Weights:
        m = self.keep or max(len(deltas) - self.byzantine, 1)
        return krum(deltas, self.byzantine, m)


STRATEGIES: dict[str, type[CompressedFedAvg]] = {
    c.name: c for c in (CompressedFedAvg, FedProx, TrimmedMean, Median, Krum)}


def build(name: str, **kw: Any) -> CompressedFedAvg:
    """A strategy by its run-config name; extra keywords not taken by it are an error."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name](**kw)
