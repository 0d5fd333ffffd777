"""`fiberwatch.bench._model_long`: normal shards through the gateway path, pooled."""

from __future__ import annotations

import pytest

from edge_agent.package import read_package
from federation.model import task
from federation.model.datasets import DAS_SPEC, from_frames
from federation.registry.package import package_model
from fiberwatch.bench import _model_long as long
from sensors_sim import SimConfig, Simulator

pytestmark = pytest.mark.slow  # converts a model

CH = 32


@pytest.fixture(scope="module")
def pkg_bytes() -> bytes:
    cfg = SimConfig(channels=CH, seconds=30.0, streams=("das",))
    train = from_frames((f for _, f in Simulator(cfg, seed=1).frames()), DAS_SPEC).normal_rows()
    model, _ = task.prepare_and_fit(train, epochs=3, batch_size=256)
    data, _ = package_model(model, DAS_SPEC, rows=train, version="long-1")
    read_package(data, None)
    return data


def test_a_shard_is_normal_operation_with_dropped_frames() -> None:
    plan = long.LongPlan(shards=3, channels=CH, seconds=20.0, drop_p=0.05, seed=7)
    cfg = long.shard_config(plan, 2)
    assert (cfg.channels, cfg.seconds, cfg.streams) == (CH, 20.0, ("das",))
    assert [s.kind for s in cfg.scenarios] == ["dropped"]
    assert plan.channel_hours == pytest.approx(3 * CH * 20.0 / 3600)
    assert long.shard_config(long.LongPlan(drop_p=0.0), 0).scenarios == ()
    assert plan.seed not in long.VALIDATION_SEEDS + long.TRAIN_SEEDS


def test_shards_run_in_workers_and_pool_their_false_alarms(pkg_bytes: bytes) -> None:
    plan = long.LongPlan(shards=2, channels=CH, seconds=20.0, drop_p=0.05, seed=7)
    r = long.run(pkg_bytes, plan, workers=2, progress=False)
    assert [s["seed"] for s in r["shards"]] == [7, 8]
    assert r["channel_hours"] == pytest.approx(plan.channel_hours)
    assert r["false_alarms"] == sum(len(s["events"]) for s in r["shards"])
    for s in r["shards"]:
        assert s["counters"]["gaps"] > 0  # the dropped frames arrived as gaps
        assert 5 <= s["counters"]["windows"] < 39  # 20 s of 0.5 s hops, less the refills
        # a cold start inside the 300 s warm-up raises nothing
        assert s["events"] == []
    again = long.run_shard(pkg_bytes, plan, 1)
    assert again["events"] == r["shards"][1]["events"]
    assert again["counters"] == r["shards"][1]["counters"]
