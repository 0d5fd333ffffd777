"""The demo's gateway configs and schedule: its anomalies start after the threshold warm-up
(an anomaly inside it would be seen only when the warm-up ends, not at its onset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config import GatewayConfig
from edge_agent.thresholds import GroupThreshold
from fiberwatch.demo_setup import (
    AGENT_START_SLACK_S,
    DemoLayout,
    das_flags_from_s,
    write_gateway_configs,
    write_schedule,
)


def _configs(tmp_path: Path) -> dict[str, GatewayConfig]:
    return write_gateway_configs(DemoLayout(tmp_path), broker_port=1883,
                                 superlink="127.0.0.1:9092", channels=64, package=None)


def _first_flaggable_s(cfg: GatewayConfig) -> float:
    """The real threshold stage, window by window (classify, then learn, as the pipeline
    does): the end time of the first window it can flag."""
    das = cfg.stream("das")
    assert das is not None
    spec = das.feature_spec()
    thr = GroupThreshold(1, cfg.threshold.for_hop(spec.hop_s, spec.profile), refit_every=1)
    rng = np.random.default_rng(0)
    for i in range(100_000):
        if np.isfinite(thr.thresholds[0]):
            return spec.window_s + i * spec.hop_s
        thr.classify(np.zeros(1))
        thr.learn(rng.random(1))
    raise AssertionError("the thresholds never left their warm-up")


def test_the_warm_up_end_is_the_threshold_stage_s(tmp_path: Path) -> None:
    for cfg in _configs(tmp_path).values():
        assert das_flags_from_s(cfg) == pytest.approx(_first_flaggable_s(cfg))


def test_the_demo_and_its_tests_onsets_are_after_the_warm_up(tmp_path: Path) -> None:
    configs = _configs(tmp_path)
    for onset in (40.0, 45.0):  # the demo's default (and the operator loop's), the e2e test's
        write_schedule(DemoLayout(tmp_path), configs, seconds=None, leak_onset=onset)
        sched = json.loads(DemoLayout(tmp_path).schedule.read_text())
        first = min(x["onset"] for g in sched["gateways"] for x in g["scenario"])
        assert first == onset
        assert all(first >= das_flags_from_s(c) + AGENT_START_SLACK_S for c in configs.values())


def test_an_anomaly_inside_the_warm_up_is_a_clear_error(tmp_path: Path) -> None:
    configs = _configs(tmp_path)
    early = das_flags_from_s(configs["well-a"]) + AGENT_START_SLACK_S - 1.0
    with pytest.raises(ValueError, match=r"anomaly on well-a starts at .* inside the threshold"):
        write_schedule(DemoLayout(tmp_path), configs, seconds=None, leak_onset=early)
    assert not DemoLayout(tmp_path).schedule.exists()


def test_a_benign_valve_inside_the_warm_up_is_no_error(tmp_path: Path) -> None:
    """The valve is not an anomaly (the operator labels its flags normal): not checked."""
    valve = {"kind": "valve", "onset": 5.0, "duration": 60.0, "channels": "8-15",
             "period": 15.0, "on": 2.0}
    write_schedule(DemoLayout(tmp_path), _configs(tmp_path), seconds=None, leak_onset=40.0,
                   extra={"well-b": [valve]})
    sched = json.loads(DemoLayout(tmp_path).schedule.read_text())
    assert valve in [x for g in sched["gateways"] for x in g["scenario"]]
