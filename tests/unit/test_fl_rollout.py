"""Canary rollout decisions, with a fake registry, a fake clock and a recording publisher."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from edge_agent import topics
from edge_agent.summary import FeatureSummary
from federation.registry import rollout
from federation.registry.rollout import Policy, Rollout, Window, judge

GATEWAYS = ["well-a/gw1", "well-a/gw2", "well-b/gw1", "pipe/gw1"]
CANARY = ("well-a/gw1",)


@dataclass
class Rec:
    version: str
    state: str
    metrics: dict[str, Any] = field(default_factory=dict)


class FakeRegistry:
    def __init__(self, states: dict[str, str]) -> None:
        self.models = {v: Rec(v, s) for v, s in states.items()}
        self.history: list[tuple[str, str, str, str]] = []
        self.unverifiable: set[str] = set()

    def list(self) -> list[Rec]:
        return list(self.models.values())

    def package_bytes(self, version: str) -> bytes:
        return f"pkg:{version}".encode()

    def verified_package(self, version: str) -> bytes:
        if version in self.unverifiable:
            raise ValueError(f"{version} refused: signature")
        return self.package_bytes(version)

    def republish(self, version: str, key: Any, *, actor: str = "", reason: str = "") -> Rec:
        new = f"{version}.r9"
        self.models[new] = Rec(new, "candidate")
        return self.models[new]

    def production(self) -> Rec | None:
        return next((r for r in self.models.values() if r.state == "production"), None)

    def promote(self, version: str, *, to: str, reason: str = "", actor: str = "") -> Rec:
        rec = self.models[version]
        if to == "production" and (prod := self.production()):
            prod.state = "retired"
        self.history.append((version, rec.state, to, reason))
        rec.state = to
        return rec

    def set_metrics(self, version: str, metrics: dict[str, Any]) -> Rec:
        self.models[version].metrics.update(metrics)
        return self.models[version]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _summary(key: str, version: str, *, flagged: int = 0, score: float = 1.0,
             seed: int = 0) -> FeatureSummary:
    site, gw = key.split("/")
    rng = np.random.default_rng(seed)
    scores = (score * rng.uniform(0.8, 1.2, 100)).tolist()
    return FeatureSummary(site=site, gateway=gw, stream="das", t_ns=0, ch_start=0,
                          group_size=8, score=scores, energy=[0.0] * 100,
                          threshold=[5.0] * 100, model_version=version,
                          flagged=list(range(flagged)))


def _setup(prod: bool = True, **policy: Any) -> tuple[Rollout, FakeRegistry, Clock,
                                                      list[tuple[str, bytes]]]:
    states = {"v1": "production", "v2": "candidate"} if prod else {"v2": "candidate"}
    reg, clock, sent = FakeRegistry(states), Clock(), []
    pol = Policy(canary=CANARY, window_s=100, min_summaries=10, adopt_timeout_s=50, **policy)
    r = Rollout(reg, lambda t, p: sent.append((t, p)), pol, gateways=GATEWAYS, clock=clock)
    for i in range(20):  # the canary gateway's recent past under v1: 1 % false alarms
        r.observe_summary(_summary(CANARY[0], "v1", flagged=1 if i % 1 == 0 else 0, seed=i))
        clock.t += 1
    return r, reg, clock, sent


def _feed(r: Rollout, clock: Clock, n: int, **kw: Any) -> None:
    for i in range(n):
        r.observe_summary(_summary(CANARY[0], "v2", seed=100 + i, **kw))
        r.observe_summary(_summary("well-b/gw1", "v1", seed=200 + i))
        clock.t += 1


def test_promotes_when_not_degraded() -> None:
    r, reg, clock, sent = _setup()
    r.start("v2")
    assert reg.models["v2"].state == "canary"
    assert sent == [(topics.model("well-a", "gw1"), b"pkg:v2")]
    r.observe_state("well-a", "gw1", {"model_version": "v2", "last_result": "swapped"})
    _feed(r, clock, 50, flagged=1)
    assert r.step().decision == "wait"  # type: ignore[union-attr]
    _feed(r, clock, 60, flagged=1)
    v = r.step()
    assert v is not None and v.decision == "promote"
    assert reg.models["v2"].state == "production" and reg.models["v1"].state == "retired"
    assert {t for t, p in sent[1:] if p == b"pkg:v2"} == {topics.model(*k.split("/"))
                                                         for k in GATEWAYS}
    canary = reg.models["v2"].metrics["canary"]
    assert canary["baseline_kind"] == "previous" and canary["decision"] == "promote"
    assert [h[1:3] for h in reg.history] == [("candidate", "canary"), ("canary", "production")]
    assert r.step() is None  # nothing running any more


def test_rolls_back_on_more_false_alarms() -> None:
    r, reg, clock, sent = _setup()
    r.start("v2")
    r.observe_state("well-a", "gw1", {"model_version": "v2"})
    _feed(r, clock, 20, flagged=10)  # 10 % of the groups flagged, was 1 %
    v = r.step()
    assert v is not None and v.decision == "rollback" and "false alarms" in v.reason
    assert reg.models["v2"].state == "retired" and reg.models["v1"].state == "production"
    assert sent[-1] == (topics.model("well-a", "gw1"), b"pkg:v1")  # production re-published
    assert reg.history[-1][3] == v.reason


def test_rolls_back_on_a_shifted_score_distribution() -> None:
    r, reg, clock, _ = _setup()
    r.start("v2")
    r.observe_state("well-a", "gw1", {"model_version": "v2"})
    _feed(r, clock, 20, flagged=1, score=3.0)
    v = r.step()
    assert v is not None and v.decision == "rollback" and "score" in v.reason


def test_rolls_back_when_a_canary_refuses_the_package() -> None:
    r, reg, _, sent = _setup()
    r.start("v2")
    r.observe_state("well-a", "gw1", {"model_version": "v1", "last_result": "refused",
                                      "reason": "v2 too slow: 40 ms"})
    v = r.step()
    assert v is not None and v.decision == "rollback" and "too slow" in v.reason
    assert sent[-1][1] == b"pkg:v1"


def test_rolls_back_when_never_adopted_and_clears_without_production() -> None:
    r, reg, clock, sent = _setup(prod=False)
    r.start("v2")
    clock.t += 30
    assert r.step().decision == "wait"  # type: ignore[union-attr]
    clock.t += 30
    v = r.step()
    assert v is not None and v.decision == "rollback" and "within" in v.reason
    assert sent[-1] == (topics.model("well-a", "gw1"), b"")  # retained announcement cleared


def test_control_gateways_are_the_baseline_without_a_previous_window() -> None:
    reg, clock, sent = FakeRegistry({"v1": "production", "v2": "candidate"}), Clock(), []
    r = Rollout(reg, lambda t, p: sent.append((t, p)),
                Policy(canary=CANARY, window_s=10, min_summaries=5), clock=clock)
    r.start("v2")
    r.observe_state("well-a", "gw1", {"model_version": "v2"})
    _feed(r, clock, 15)
    v = r.step()
    assert v is not None and v.decision == "promote"
    assert reg.models["v2"].metrics["canary"]["baseline_kind"] == "control"


def test_judge_waits_for_enough_data() -> None:
    w = Window()
    pol = Policy(canary=CANARY, min_summaries=3)
    assert judge(w, w, pol, elapsed_s=1e6, adopted=True).decision == "wait"
    with pytest.raises(RuntimeError):
        r, *_ = _setup()
        r.start("v2")
        r.start("v2")


def test_service_routes_messages_without_a_broker() -> None:
    old, reg, _, _ = _setup()
    svc = rollout.RolloutService(reg, old.policy, "127.0.0.1", 1, gateways=GATEWAYS)
    r = svc.rollout
    assert r.publish == svc._publish  # the service publishes retained on its broker
    r.publish = lambda t, p: None  # no broker here
    r.start("v2")
    svc.handle(topics.model_state("well-a", "gw1"), json.dumps({"model_version": "v2"}).encode())
    svc.handle(topics.features("well-a", "gw1", "das"), _summary(CANARY[0], "v2").to_json())
    svc.handle(topics.health("new-site", "gw9"), b"{}")
    svc.handle("not/ours", b"x")
    svc.handle(topics.features("well-a", "gw1", "das"), b"{broken")
    assert r._adopted == {"well-a/gw1"} and r._canary.summaries == 1
    assert "new-site/gw9" in r.fleet
    assert svc.next_candidate() is None  # v2 is no longer a candidate


def test_a_rollback_with_a_signing_key_republishes_production_with_a_new_serial() -> None:
    r, reg, clock, sent = _setup()
    r.signing_key = object()  # the fake registry's republish only records the call
    r.start("v2")
    r.observe_state("well-a", "gw1", {"model_version": "v2"})
    _feed(r, clock, 20, flagged=10)
    assert r.step().decision == "rollback"  # type: ignore[union-attr]
    assert reg.models["v1.r9"].state == "production" and reg.models["v1"].state == "retired"
    assert sent[-1] == (topics.model("well-a", "gw1"), b"pkg:v1.r9")  # not the old package


def test_a_candidate_that_does_not_verify_is_retired_not_canaried() -> None:
    r, reg, _, sent = _setup()
    reg.unverifiable.add("v2")
    r.start("v2")
    assert r.version is None and sent == []
    assert reg.models["v2"].state == "retired" and "signature" in reg.history[-1][3]
