"""Canary rollout: publish a candidate to a few gateways, compare, promote or roll back.

`Rollout` is the controller, independent of MQTT: it is fed the gateways' feature summaries
(``features/{stream}``) and model states (``model_state``) as they arrive, and given a
``publish(topic, payload)`` that sends a retained QoS 1 message. `RolloutService` wires it to
a broker and watches the registry for new candidates.

1. ``start(version)``: registry ``candidate -> canary``; the signed package is published,
   retained, on ``topics.model`` of the canary gateways.
2. Summaries are sorted by receive time into windows: *canary* (canary gateways, scored by
   the candidate), *previous* (the canary gateways under the old model, the ``window_s``
   before the start) and *control* (the other gateways since the start). The baseline is
   *previous* when it holds ``min_summaries``, else *control*.
3. `judge`: degraded when the canary's false-alarm rate (flagged groups / groups) exceeds
   ``far_ratio x baseline + far_margin``, or its median group score exceeds
   ``score_ratio x`` the baseline's; also when a canary gateway refuses the package or falls
   back, or none serves it within ``adopt_timeout_s``. Otherwise, after ``window_s`` of canary
   data, promote.
4. Promote: registry ``canary -> production`` and the package to every gateway. Roll back:
   registry ``canary -> retired`` and the production model re-published to the canary
   gateways (without a production model the retained announcement is cleared). Gateways
   refuse a serial lower than one they accepted, so with a ``signing_key`` the rollback is a
   *new* package (`Registry.republish`: the production weights, a higher serial) promoted to
   production; without one the old package is sent and the canaries keep the candidate (a
   warning says so). Every decision's numbers go to the registry (``set_metrics``) and its
   reason to the history.

Nothing is published unverified: every package comes from `Registry.verified_package`
(signature and stored hash); a candidate that fails is retired, not canaried.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent import topics
from edge_agent.config import BrokerConfig
from edge_agent.mqtt_client import make_client
from edge_agent.summary import FeatureSummary, SummaryError

log = logging.getLogger(__name__)
Publish = Callable[[str, bytes], None]


@dataclass(frozen=True)
class Policy:
    canary: tuple[str, ...]  # "site/gateway" keys
    window_s: float = 600.0
    min_summaries: int = 30
    far_ratio: float = 2.0
    far_margin: float = 0.002
    score_ratio: float = 1.5
    adopt_timeout_s: float = 300.0


@dataclass
class Window:
    """Pooled statistics of some feature summaries."""

    summaries: int = 0
    groups: int = 0
    flagged: int = 0
    scores: list[float] = field(default_factory=list)

    def add(self, s: FeatureSummary) -> None:
        self.summaries += 1
        self.groups += len(s.score)
        self.flagged += len(s.flagged)
        self.scores.extend(s.score)

    @property
    def far(self) -> float:
        return self.flagged / self.groups if self.groups else 0.0

    @property
    def median(self) -> float:
        return float(np.median(self.scores)) if self.scores else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"summaries": self.summaries, "far": round(self.far, 6),
                "score_p50": round(self.median, 4),
                "score_p99": round(float(np.quantile(self.scores, 0.99)), 4) if self.scores
                else 0.0}


@dataclass(frozen=True)
class Verdict:
    decision: str  # "wait" | "promote" | "rollback"
    reason: str


def judge(canary: Window, baseline: Window, policy: Policy, *, elapsed_s: float,
          adopted: bool, refused: str = "") -> Verdict:
    """The decision for one canary at ``elapsed_s`` after its start (pure)."""
    if refused:
        return Verdict("rollback", f"canary refused the model: {refused}")
    if not adopted:
        if elapsed_s >= policy.adopt_timeout_s:
            return Verdict("rollback", f"no canary gateway served the model within "
                                       f"{policy.adopt_timeout_s:g} s")
        return Verdict("wait", "waiting for the canary gateways to swap")
    if canary.summaries < policy.min_summaries or baseline.summaries < policy.min_summaries:
        return Verdict("wait", f"{canary.summaries} canary / {baseline.summaries} baseline "
                               f"summaries, need {policy.min_summaries}")
    far_limit = policy.far_ratio * baseline.far + policy.far_margin
    nums = (f"false alarms {canary.far:.4f} vs {baseline.far:.4f} (limit {far_limit:.4f}), "
            f"median score {canary.median:.3g} vs {baseline.median:.3g}")
    if canary.far > far_limit:
        return Verdict("rollback", f"degraded: {nums}")
    if baseline.median > 0 and canary.median > policy.score_ratio * baseline.median:
        return Verdict("rollback", f"degraded score distribution: {nums}")
    if elapsed_s >= policy.window_s:
        return Verdict("promote", f"not degraded over {elapsed_s:.0f} s: {nums}")
    return Verdict("wait", f"so far not degraded: {nums}")


def _key(site: str, gateway: str) -> str:
    return f"{site}/{gateway}"


def _topic(key: str) -> str:
    site, gw = key.split("/", 1)
    return topics.model(site, gw)


class Rollout:
    """One canary at a time; call `observe_*` as messages arrive and `step` periodically."""

    def __init__(self, registry: Any, publish: Publish, policy: Policy, *,
                 gateways: Iterable[str] = (), clock: Callable[[], float] = time.monotonic,
                 actor: str = "rollout", signing_key: Any = None) -> None:
        self.registry, self.publish, self.policy = registry, publish, policy
        self.signing_key = signing_key
        self.clock, self.actor = clock, actor
        self.fleet = set(gateways) | set(policy.canary)
        self.version: str | None = None
        self.started = 0.0
        self._recent: dict[str, deque[tuple[float, FeatureSummary]]] = {}
        self._canary, self._control = Window(), Window()
        self._previous = Window()
        self._adopted: set[str] = set()
        self._refused = ""

    def observe_summary(self, s: FeatureSummary) -> None:
        now, key = self.clock(), _key(s.site, s.gateway)
        self.fleet.add(key)
        recent = self._recent.setdefault(key, deque())
        recent.append((now, s))
        while recent and recent[0][0] < now - self.policy.window_s:
            recent.popleft()
        if self.version is None:
            return
        if key in self.policy.canary:
            if s.model_version == self.version:
                self._canary.add(s)
        else:
            self._control.add(s)

    def observe_state(self, site: str, gateway: str, state: dict[str, Any]) -> None:
        key = _key(site, gateway)
        self.fleet.add(key)
        if self.version is None or key not in self.policy.canary:
            return
        if state.get("model_version") == self.version:
            self._adopted.add(key)
        elif state.get("last_result") in ("refused", "fallback") and self.version in str(
                state.get("reason", "")):
            self._refused = f"{key}: {state.get('reason')}"

    def start(self, version: str) -> None:
        if self.version is not None:
            raise RuntimeError(f"canary {self.version} still running")
        try:
            package = self.registry.verified_package(version)
        except ValueError as exc:  # RegistryTrustError: never canary an unverified package
            self.registry.promote(version, to="retired", actor=self.actor, reason=str(exc))
            log.error("canary refused version=%s reason=%s", version, exc)
            return
        self.registry.promote(version, to="canary", actor=self.actor,
                              reason=f"canary on {', '.join(sorted(self.policy.canary))}")
        self.version, self.started = version, self.clock()
        self._canary, self._control, self._previous = Window(), Window(), Window()
        self._adopted, self._refused = set(), ""
        for key in self.policy.canary:
            for _, s in self._recent.get(key, ()):
                self._previous.add(s)
            self.publish(_topic(key), package)
        log.warning("canary started version=%s gateways=%s", version, ",".join(self.policy.canary))

    def step(self) -> Verdict | None:
        """Judge the running canary and act on the verdict; None when no canary runs."""
        if self.version is None:
            return None
        use_prev = self._previous.summaries >= self.policy.min_summaries
        baseline = self._previous if use_prev else self._control
        v = judge(self._canary, baseline, self.policy, elapsed_s=self.clock() - self.started,
                  adopted=bool(self._adopted), refused=self._refused)
        if v.decision == "wait":
            return v
        version, self.version = self.version, None
        self.registry.set_metrics(version, {"canary": {
            "decision": v.decision, "reason": v.reason, "canary": self._canary.to_dict(),
            "baseline": baseline.to_dict(), "baseline_kind": "previous" if use_prev
            else "control"}})
        if v.decision == "promote":
            self.registry.promote(version, to="production", reason=v.reason, actor=self.actor)
            package = self.registry.verified_package(version)
            for key in sorted(self.fleet):
                self.publish(_topic(key), package)
        else:
            self.registry.promote(version, to="retired", reason=v.reason, actor=self.actor)
            package = self._rollback_package(version)
            for key in self.policy.canary:
                self.publish(_topic(key), package)
        log.warning("canary %s version=%s reason=%s", v.decision, version, v.reason)
        return v

    def _rollback_package(self, version: str) -> bytes:
        """What the canary gateways get back: the production weights with a higher serial."""
        prod = self.registry.production()
        if prod is None:
            return b""
        if self.signing_key is None:
            log.warning("rollback of %s without a signing key: %s is re-sent with its old "
                        "serial, which gateways refuse (they keep %s)", version, prod.version,
                        version)
            return bytes(self.registry.verified_package(prod.version))
        rec = self.registry.republish(prod.version, self.signing_key, actor=self.actor,
                                      reason=f"rollback of {version}")
        self.registry.promote(rec.version, to="production", actor=self.actor,
                              reason=f"rollback of {version}: {prod.version} re-signed")
        return bytes(self.registry.verified_package(rec.version))


class RolloutService:
    """A `Rollout` on an MQTT broker: new registry candidates are canaried in turn.

    The service owns its `Rollout` (which publishes through the service's client) and,
    after `start`, its thread: `stop` ends and joins it. `run` is the same loop in the
    caller's thread. `broker` (credentials, TLS: `edge_agent.mqtt_client`) wins over plain
    `host`:`port`.
    """

    def __init__(self, registry: Any, policy: Policy, host: str, port: int, *,
                 gateways: Iterable[str] = (), poll_s: float = 1.0,
                 client_id: str = "fiberwatch-rollout", broker: BrokerConfig | None = None,
                 clock: Callable[[], float] = time.monotonic, signing_key: Any = None) -> None:
        self.rollout = Rollout(registry, self._publish, policy, gateways=gateways, clock=clock,
                               signing_key=signing_key)
        self.poll_s = poll_s
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=100_000)
        self._handled: set[str] = {r.version for r in registry.list()
                                   if r.state != "candidate"}
        self.broker = broker or BrokerConfig(host=host, port=port)
        c = make_client(self.broker, client_id, protocol="v311", reconnect_delay_s=(0.5, 10))
        c.on_connect = self._on_connect
        c.on_message = lambda _c, _u, m: self._put(m.topic, bytes(m.payload))
        self.client = c

    def start(self) -> None:
        """`run` in a thread of its own (named ``rollout``)."""
        if self._thread is not None:
            raise RuntimeError("the rollout service is already started")
        self._thread = threading.Thread(target=self.run, name="rollout")
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """End `run` and join the thread `start` made."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @staticmethod
    def _on_connect(client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("rollout broker refused the connection: %s", rc)
        else:  # (re)subscribe on every connect
            client.subscribe([(topics.ALL_FEATURES, 0), (topics.ALL_MODEL_STATE, 1),
                              (topics.ALL_HEALTH, 1)])

    def _put(self, topic: str, payload: bytes) -> None:
        try:
            self._inbox.put_nowait((topic, payload))
        except queue.Full:
            pass  # summaries are sampled statistics: dropping some under overload is harmless

    def _publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(30)

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            site, gw, suffix = topics.parse(topic)
            if suffix.startswith("features/"):
                self.rollout.observe_summary(FeatureSummary.decode(payload))
            elif suffix == "model_state":
                self.rollout.observe_state(site, gw, json.loads(payload))
            elif suffix == "health":
                self.rollout.fleet.add(_key(site, gw))
        except (ValueError, SummaryError) as exc:
            log.debug("ignored message topic=%s error=%s", topic, exc)

    def next_candidate(self) -> str | None:
        cands = [r for r in self.rollout.registry.list() if r.state == "candidate"
                 and r.version not in self._handled and r.metrics.get("source") == "federated"]
        return cands[-1].version if cands else None

    def run(self) -> None:
        """Until `stop_event`: consume messages, step the canary, start the next candidate."""
        self.client.loop_start()  # connects in the background, reconnects with backoff
        try:
            next_check = 0.0
            while not self.stop_event.is_set():
                try:
                    self.handle(*self._inbox.get(timeout=0.2))
                    for _ in range(10_000):
                        self.handle(*self._inbox.get_nowait())
                except queue.Empty:
                    pass
                if time.monotonic() < next_check:
                    continue
                next_check = time.monotonic() + self.poll_s
                self.rollout.step()
                if self.rollout.version is None and (v := self.next_candidate()):
                    self._handled.add(v)
                    self.rollout.start(v)
        finally:
            self.client.loop_stop()
            self.client.disconnect()
