"""`fiberwatch bench security`: start a secure deployment and attack it.

The deployment (`_security_deploy`): cloud and site Mosquitto running the generated configs,
the site -> cloud bridge, influxd, ingestion, the cloud API and one gateway agent (gateway
B), all on loopback. Each check is a plain function ``check(dep) -> (passed, detail)``,
listed in `CHECKS`; every one has a positive control where it could pass vacuously (a
message that *is* delivered, a token that *is* let through), so it fails when its
protection is switched off. JSON::

    {"checks": {NAME: {"passed": bool, "detail": str}}, "passed": N, "failed": M, ...}
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent import topics
from edge_agent.events import Event
from fiberwatch.bench._security_deploy import GW_A, GW_B, SITE, Deployment
from fiberwatch.bench._security_probe import connect, http, make_event, wait_for
from fiberwatch.bench._security_trust import run_trust_checks
from fiberwatch.deploy.spec import gateway_user

Check = Callable[[Deployment], tuple[bool, str]]


def _store(dep: Deployment) -> Any:
    from cloud.influx import InfluxClient
    from cloud.store import Store

    assert dep.influx is not None
    return Store(InfluxClient(dep.influx.url))


def _stored(dep: Deployment, ev: Event) -> bool:
    """Whether the cloud stored `ev` (under its id scoped by site and gateway, as ingestion
    does: `cloud.codec.cloud_event_id`)."""
    from cloud.codec import cloud_event_id

    try:
        return _store(dep).anomaly(cloud_event_id(ev.site, ev.gateway, ev.id)) is not None
    except Exception:  # noqa: BLE001 - influxd busy or the database not created yet
        return False


def check_anonymous_refused(dep: Deployment) -> tuple[bool, str]:
    assert dep.site and dep.cloud
    out = []
    for name, port in (("site", dep.site.port), ("cloud", dep.cloud.port)):
        p = connect(port, dep.ca, None, None)
        p.close()
        out.append((name, p.connected, p.reason))
    passed = not any(c for _, c, _ in out)
    return passed, "; ".join(f"{n} broker: {r}" for n, _, r in out)


def check_wrong_password_refused(dep: Deployment) -> tuple[bool, str]:
    assert dep.site
    user = gateway_user(SITE, GW_A)
    bad = connect(dep.site.port, dep.ca, user, "not-" + dep.password(user))
    bad.close()
    good = connect(dep.site.port, dep.ca, user, dep.password(user))  # control
    good.close()
    passed = not bad.connected and good.connected
    return passed, f"wrong password: {bad.reason}; right password (control): {good.reason}"


def check_forged_event_denied(dep: Deployment) -> tuple[bool, str]:
    """Gateway A publishes an event under B's topic: refused in the PUBACK, never stored."""
    assert dep.site
    user = gateway_user(SITE, GW_A)
    a = connect(dep.site.port, dep.ca, user, dep.password(user))
    try:
        forged, own = make_event(SITE, GW_B, 1), make_event(SITE, GW_A, 2)
        forged_ack = a.publish(topics.events(SITE, GW_B), forged.to_json())
        own_ack = a.publish(topics.events(SITE, GW_A), own.to_json())
    finally:
        a.close()
    own_stored = wait_for(lambda: _stored(dep, own), 60)
    time.sleep(1.0)  # the forged one was published first: it would be stored by now
    forged_stored = _stored(dep, forged)
    refused = forged_ack not in ("Success", "No matching subscribers", "no puback")
    passed = refused and not forged_stored and own_stored
    return passed, (f"forged event PUBACK: {forged_ack}, stored in the cloud: {forged_stored}; "
                    f"own event (control) PUBACK: {own_ack}, stored: {own_stored}")


def check_model_topic_isolated(dep: Deployment) -> tuple[bool, str]:
    """Gateway A subscribes to B's model topic: it gets its own announcement, not B's."""
    assert dep.site and dep.cloud
    user = gateway_user(SITE, GW_A)
    a = connect(dep.site.port, dep.ca, user, dep.password(user))
    a.client.subscribe([(topics.model(SITE, GW_B), 1), (topics.model(SITE, GW_A), 1)])
    time.sleep(0.5)
    ro = connect(dep.cloud.port, dep.ca, "rollout", dep.password("rollout"))
    try:
        tag = str(time.time_ns()).encode()
        acks = [ro.publish(topics.model(SITE, gw), b"bench-not-a-package-" + tag, retain=True)
                for gw in (GW_B, GW_A)]
        got_own = wait_for(lambda: any(t == topics.model(SITE, GW_A) for t, _ in a.received),
                           30)
        time.sleep(1.0)
        got_b = [t for t, _ in a.received if t == topics.model(SITE, GW_B)]
    finally:
        ro.close()
        a.close()
    passed = got_own and not got_b
    return passed, (f"A received B's model: {len(got_b)} message(s); A received its own "
                    f"(control, via the bridge): {got_own}; rollout PUBACKs {acks}")


def check_viewer_cannot_promote(dep: Deployment) -> tuple[bool, str]:
    url = f"{dep.api_url}/api/v1/models/no-such-version/promote"
    body = {"to": "production", "reason": "bench security"}
    viewer = http("POST", url, dep.tokens["viewer"], body)
    admin = http("POST", url, dep.tokens["admin"], body)  # control: gets past the role check
    passed = viewer == 403 and admin not in (0, 401, 403)
    return passed, f"viewer token: HTTP {viewer}; admin token (control): HTTP {admin}"


def make_bridge_outage_check(down_s: float) -> Check:
    def check_bridge_outage(dep: Deployment) -> tuple[bool, str]:
        """The cloud broker is down `down_s`; an event published at the site meanwhile
        reaches the store once it is back (queued by the bridge's persistent session)."""
        assert dep.site and dep.cloud
        user = gateway_user(SITE, GW_A)
        ev = make_event(SITE, GW_A, 3)
        dep.cloud.stop()
        try:
            a = connect(dep.site.port, dep.ca, user, dep.password(user))
            ack = a.publish(topics.events(SITE, GW_A), ev.to_json())
            a.close()
            time.sleep(down_s)
        finally:
            dep.cloud.start()
        t0 = time.monotonic()
        stored = wait_for(lambda: _stored(dep, ev), 120)
        when = f"{time.monotonic() - t0:.1f} s after it came back" if stored else "never (120 s)"
        return stored, f"cloud broker down {down_s:g} s; site PUBACK {ack}; stored {when}"

    return check_bridge_outage


def check_agent_reaches_cloud(dep: Deployment) -> tuple[bool, str]:
    """Control for the deployment itself: the agent's health crosses TLS, ACL and bridge."""
    def seen() -> bool:
        try:
            return any(g.get("gateway") == GW_B for g in _store(dep).fleet())
        except Exception:  # noqa: BLE001 - database not created yet
            return False

    ok = wait_for(seen, 60)
    return ok, f"agent {SITE}/{GW_B} health in the cloud store: {ok}"


def checks(down_s: float) -> list[tuple[str, Check]]:
    return [
        ("agent_reaches_cloud", check_agent_reaches_cloud),
        ("anonymous_connect_refused", check_anonymous_refused),
        ("wrong_password_refused", check_wrong_password_refused),
        ("forged_event_denied", check_forged_event_denied),
        ("model_topic_isolated", check_model_topic_isolated),
        ("viewer_cannot_promote", check_viewer_cannot_promote),
        ("event_crosses_bridge_after_outage", make_bridge_outage_check(down_s)),
    ]


#: Other modules' checks, each ``source(workdir) -> {NAME: {"passed", "detail"}}``, merged
#: into the result: the model-trust, Flower-auth and API-bind checks.
EXTRA_CHECK_SOURCES: list[Callable[[Path], dict[str, dict[str, Any]]]] = [run_trust_checks]


def run_checks(dep: Deployment, todo: list[tuple[str, Check]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, fn in todo:
        t0 = time.monotonic()
        try:
            passed, detail = fn(dep)
        except Exception as exc:  # noqa: BLE001 - a crashing check is a failed check
            passed, detail = False, f"error: {type(exc).__name__}: {exc}"
        out[name] = {"passed": bool(passed), "detail": detail,
                     "seconds": round(time.monotonic() - t0, 1)}
        print(f"security: {name}: {'pass' if passed else 'FAIL'} ({detail})", flush=True)
    return out


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    passed = sum(1 for r in results.values() if r["passed"])
    return {"checks": results, "passed": passed, "failed": len(results) - passed}


def run(quick: bool = False, out_dir: Path | None = None) -> dict[str, Any]:  # noqa: ARG001
    down_s = 5.0 if quick else 30.0
    with tempfile.TemporaryDirectory(prefix="fw-bench-security-") as tmp:
        workdir = Path(tmp)
        t0 = time.monotonic()
        with Deployment(workdir / "mqtt") as dep:
            start_s = time.monotonic() - t0
            results = run_checks(dep, checks(down_s))
        for source in EXTRA_CHECK_SOURCES:  # the merge point (see EXTRA_CHECK_SOURCES)
            results.update(source(workdir / source.__module__.rsplit(".", 1)[-1]))
    out = summarise(results)
    out.update({"benchmark": "security", "bridge_outage_s": down_s,
                "deployment_start_s": round(start_s, 2), "quick": quick})
    return out


def to_markdown(result: dict[str, Any]) -> str:
    rows = "\n".join(f"| {name} | {'pass' if r['passed'] else '**FAIL**'} | {r['detail']} |"
                     for name, r in result["checks"].items())
    return (f"## security\n\nA secure deployment on loopback (site and cloud Mosquitto from "
            f"`fiberwatch deploy`, bridge, influxd, ingestion, API, one agent), attacked: "
            f"**{result['passed']} passed, {result['failed']} failed**. Bridge outage "
            f"{result['bridge_outage_s']:g} s.\n\n| check | result | detail |\n|---|---|---|\n"
            f"{rows}\n")
