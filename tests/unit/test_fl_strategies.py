"""Aggregation rules, strategies over compressed replies, and the round exchange."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from federation.flower import compression, rounds, strategies

SHAPES = [(4, 3), (4,)]


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1


def _honest(n: int, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[(1.0 + 0.1 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES]
            for _ in range(n)]


def _poisoned(kind: str) -> list[np.ndarray]:
    f = {"scale": 50.0, "flip": -10.0}[kind]
    return [np.full(s, f, np.float32) for s in SHAPES]


def _dist(update: list[np.ndarray], target: float = 1.0) -> float:
    return float(max(np.abs(t - target).max() for t in update))


def test_weighted_mean() -> None:
    a = [np.zeros(s, np.float32) for s in SHAPES]
    b = [np.ones(s, np.float32) for s in SHAPES]
    out = strategies.weighted_mean([a, b], [1, 3])
    assert all(np.allclose(t, 0.75) for t in out)
    with pytest.raises(ValueError):
        strategies.weighted_mean([], [])


@pytest.mark.parametrize("kind", ["scale", "flip"])
def test_robust_rules_resist_two_of_ten_poisoned(kind: str) -> None:
    updates = _honest(8) + [_poisoned(kind), _poisoned(kind)]
    fedavg = strategies.weighted_mean(updates, [1] * 10)
    assert _dist(fedavg) > 1.5  # the attack moves plain averaging far away
    assert _dist(strategies.trimmed_mean(updates, 0.2)) < 0.2
    assert _dist(strategies.coordinate_median(updates)) < 0.2
    assert _dist(strategies.krum(updates, f=2, m=6)) < 0.2
    assert not {8, 9} & set(strategies.krum_select(updates, f=2, m=8))


def test_trimmed_mean_needs_something_left() -> None:
    with pytest.raises(ValueError, match="leaves nothing"):
        strategies.trimmed_mean(_honest(2), 0.5)
    # the strategy falls back to the median when too few replies arrive to trim
    s = strategies.TrimmedMean(trim=0.4)
    out = s.combine(_honest(2), [1, 1])
    assert all(t.shape == shp for t, shp in zip(out, SHAPES, strict=True))


def test_build_by_name() -> None:
    assert isinstance(strategies.build("fedprox", proximal_mu=0.1), strategies.FedProx)
    with pytest.raises(ValueError, match="unknown strategy"):
        strategies.build("fedsgd")
    with pytest.raises(ValueError, match="trim"):
        strategies.build("trimmed-mean", trim=0.6)


class FakeGrid:
    """Node ids only; replies are fed by the tests."""

    def __init__(self, nodes: Iterable[int]) -> None:
        self.nodes = list(nodes)

    def get_node_ids(self) -> list[int]:
        return self.nodes


def _reply(to: Message, delta: list[np.ndarray], n: int, scheme: str = "int8") -> Message:
    blob, meta = compression.encode(delta, scheme)
    return Message(RecordDict({"reply": ConfigRecord({
        "update": blob, **meta.to_config(), "num-examples": n, "train_loss": 1.0,
        "eval_loss": 2.0, "score_p99": 3.0})}), reply_to=to)


def _configure(strategy: strategies.CompressedFedAvg, nodes: list[int]) -> list[Message]:
    weights = [np.zeros(s, np.float32) for s in SHAPES]
    msgs = list(strategy.configure_train(1, ArrayRecord(weights), ConfigRecord(),
                                         FakeGrid(nodes)))  # type: ignore[arg-type]
    for m in msgs:
        m.metadata.__dict__["_message_id"] = m.object_id
    return msgs


def test_configure_train_sends_packed_weights_and_round_config() -> None:
    s = strategies.FedProx(proximal_mu=0.5, codec="fp16", min_train_nodes=2,
                           train_config={"epochs": 3})
    msgs = _configure(s, [11, 12, 13])
    assert sorted(m.metadata.dst_node_id for m in msgs) == [11, 12, 13]
    cfg = msgs[0].content.config_records["config"]
    assert (cfg["proximal-mu"], cfg["codec"], cfg["epochs"], cfg["server-round"]) == (
        0.5, "fp16", 3, 1)
    blob = cfg["weights"]
    assert len(blob) == 4 * sum(int(np.prod(x)) for x in SHAPES)
    assert len(msgs[0].content.array_records) == 0  # one record per message (see compression)


def test_aggregate_train_decodes_weights_and_rejects_bad_replies() -> None:
    s = strategies.CompressedFedAvg(min_train_nodes=2)
    m1, m2, m3, m4 = _configure(s, [1, 2, 3, 4])
    ones = [np.ones(x, np.float32) for x in SHAPES]
    replies = [
        _reply(m1, ones, 100), _reply(m2, [3 * t for t in ones], 300),
        Message(Error(code=1, reason="boom"), reply_to=m3),
        _reply(m4, ones, 100),
    ]
    replies[3].content.config_records["reply"]["tensors"] = [0]  # metadata does not fit the blob
    new, metrics = s.aggregate_train(1, replies)
    assert new is not None and metrics is not None
    agg = new.to_numpy_ndarrays()
    assert all(np.allclose(t, 2.5, atol=0.02) for t in agg)  # (1*100 + 3*300) / 400
    assert metrics["num-examples"] == 400 and metrics["eval_loss"] == pytest.approx(2.0)
    assert set(s.last.rejected) == {3, 4}
    assert "boom" in s.last.rejected[3] and "bad update" in s.last.rejected[4]
    assert all(u.bytes_up > 0 for u in s.last.used)


def test_median_strategy_ignores_a_poisoned_reply() -> None:
    s = strategies.Median(min_train_nodes=3)
    msgs = _configure(s, [1, 2, 3, 4, 5])
    ones = [np.ones(x, np.float32) for x in SHAPES]
    replies = [_reply(m, ones, 10) for m in msgs[:4]]
    replies.append(_reply(msgs[4], [-1000 * t for t in ones], 10))
    new, _ = s.aggregate_train(1, replies)
    assert new is not None
    assert all(np.allclose(t, 1.0, atol=0.01) for t in new.to_numpy_ndarrays())


class ScriptedGrid:
    """push/pull with replies that become available at scripted (fake) times."""

    def __init__(self, clock: list[float], reply_at: dict[int, float | None]) -> None:
        self.clock, self.reply_at = clock, reply_at
        self.pushed: dict[str, Message] = {}

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = m.object_id
            self.pushed[m.object_id] = m
            ids.append(m.object_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        out = []
        for i in ids:
            m = self.pushed[i]
            t = self.reply_at[m.metadata.dst_node_id]
            if t is not None and self.clock[0] >= t:
                out.append(Message(RecordDict(), reply_to=m))
                self.pushed[i] = m
        return out


def _run_exchange(reply_at: dict[int, float | None], timing: rounds.Timing, quorum: int
                  ) -> tuple[list[Message], list[int], float]:
    clock = [0.0]
    grid = ScriptedGrid(clock, reply_at)
    msgs = [Message(RecordDict(), dst_node_id=n, message_type="train") for n in reply_at]

    def sleep(dt: float) -> None:
        clock[0] += dt

    seen: set[str] = set()
    real_pull = grid.pull_messages

    def pull_once(ids: Iterable[str]) -> list[Message]:  # each reply is delivered once
        fresh = [r for r in real_pull(ids) if r.metadata.reply_to_message_id not in seen]
        seen.update(r.metadata.reply_to_message_id for r in fresh)
        return fresh

    grid.pull_messages = pull_once  # type: ignore[method-assign]
    replies, missing = rounds.exchange(grid, msgs, quorum=quorum, timing=timing,  # type: ignore[arg-type]
                                       clock=lambda: clock[0], sleep=sleep)
    return replies, missing, clock[0]


def test_exchange_returns_as_soon_as_everyone_replied() -> None:
    timing = rounds.Timing(round_timeout_s=60, grace_s=2, poll_s=0.1)
    replies, missing, t = _run_exchange({1: 0.5, 2: 1.0, 3: 2.5}, timing, quorum=2)
    assert len(replies) == 3 and missing == [] and 2.5 <= t < 2.7


def test_exchange_waits_for_a_slow_client_as_long_as_the_quorum_took() -> None:
    timing = rounds.Timing(round_timeout_s=60, grace_s=1, poll_s=0.1)
    replies, missing, t = _run_exchange({1: 3.0, 2: 4.0, 3: 7.5}, timing, quorum=2)
    assert len(replies) == 3 and missing == []  # quorum at 4 s, so up to 4 s more


def test_exchange_gives_up_on_a_dropout_after_the_grace() -> None:
    timing = rounds.Timing(round_timeout_s=60, grace_s=2, poll_s=0.1)
    replies, missing, t = _run_exchange({1: 0.5, 2: 1.0, 3: None}, timing, quorum=2)
    assert len(replies) == 2 and missing == [3]
    assert 3.0 <= t < 3.3  # quorum at 1.0 s, then max(grace 2 s, 1.0 s)


def test_exchange_stops_at_the_round_timeout_without_quorum() -> None:
    timing = rounds.Timing(round_timeout_s=5, grace_s=2, poll_s=0.1)
    replies, missing, t = _run_exchange({1: 0.5, 2: None, 3: None}, timing, quorum=2)
    assert len(replies) == 1 and sorted(missing) == [2, 3] and 5.0 <= t < 5.2
