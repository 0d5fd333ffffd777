"""Self-attack checks for the trust half of ``fiberwatch bench security``.

`run_trust_checks` attacks real parts on loopback and returns ``{NAME: {"passed": bool,
"detail": str}}``:

* model trust: a real agent (``fiberwatch edge run`` subprocess, signed-only config) fed DAS
  frames over a real Mosquitto installs a signed baseline package from its retained ``model``
  topic; then packages that must be refused are published there one by one (unsigned, signed
  by another key, an older serial, targeted at another gateway, expired). A check passes when
  the agent's retained ``model_state`` counts a refusal for the expected reason and the
  baseline is still the active model (a check fails as soon as the package is staged or
  swapped in, or after a timeout);
* Flower: a SuperLink with TLS and SuperNode authentication, one registered SuperNode and one
  with an unregistered key: the stranger must be turned away (its SuperNode exits) while the
  member stays connected;
* cloud: ``uvicorn cloud.main:app --host 0.0.0.0`` with ``FIBERWATCH_CLOUD_INSECURE_DEV=true``
  must refuse to start (and never bind).

`Protections` switches each protection off for the tests that show every check can fail; a
benchmark always runs with the defaults. A check that crashes is reported failed, with the
error as its detail.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

SITE, GW = "bench", "gw1"
CH, RATE, FRAME = 32, 2000.0, 100
FRAME_NS = int(FRAME / RATE * 1e9)
T0 = 1_700_000_000 * 10**9
BASE_SERIAL = 1000
MODEL_CHECKS = {  # name -> expected refusal reason
    "unsigned_package_refused": "unsigned",
    "foreign_key_package_refused": "signature",
    "older_serial_refused": "serial",
    "untargeted_package_refused": "target",
    "expired_package_refused": "expired",
}
FLOWER_CHECK = "unauthorised_supernode_cannot_join"
BIND_CHECK = "insecure_dev_nonloopback_bind_refused"


@dataclass(frozen=True)
class Protections:
    """What the attacked deployment has switched on (all on: the real checks)."""

    signed_models: bool = True  # gateway config public_key (off: allow_unsigned = true)
    trust_policy: bool = True  # serial/target/expiry policy (off: in-process agent without it)
    node_auth: bool = True  # SuperLink --enable-supernode-auth with registered keys
    app: str = "cloud.main:app"  # the ASGI app uvicorn serves for the bind check


def run_trust_checks(workdir: Path, *, protections: Protections = Protections()
                     ) -> dict[str, dict]:
    """Run every trust check under ``workdir``; ``{NAME: {"passed", "detail"}}``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}
    for fn in (_model_checks, _flower_check, _bind_check):
        try:
            out.update(fn(workdir, protections))
        except Exception as exc:  # noqa: BLE001 - a crashed check is a failed check
            names = {_model_checks: list(MODEL_CHECKS), _flower_check: [FLOWER_CHECK],
                     _bind_check: [BIND_CHECK]}[fn]
            out.update({n: _result(False, f"check crashed: {exc!r}"[:500]) for n in names})
    return out


def _result(passed: bool, detail: str) -> dict:
    return {"passed": bool(passed), "detail": detail}


# -- model trust ------------------------------------------------------------------------------
def _stream() -> dict[str, Any]:
    return {"kind": "das", "channels": CH, "sample_rate_hz": RATE, "window_s": 0.5,
            "hop_s": 0.25, "group_size": 8}


def _frames(first: int, n: int) -> list[bytes]:
    from edge_agent import wire

    out = []
    for k in range(first, first + n):
        x = np.random.default_rng([7, k]).normal(size=(FRAME, CH)).astype(np.float32)
        out.append(wire.encode(wire.StreamKind.DAS, k, T0 + k * FRAME_NS, RATE, 0, x))
    return out


def base_package(workdir: Path) -> bytes:
    """A real, unsigned int8 package for the bench stream (cached in ``workdir``: the
    conversion takes tens of seconds)."""
    from edge_agent import wire
    from edge_agent.config import StreamConfig
    from edge_agent.features import FeatureExtractor

    spec = StreamConfig.model_validate(_stream()).feature_spec()
    cache = workdir / f"base-{spec.hash[:12]}.fwpkg"
    if cache.exists():
        return cache.read_bytes()
    import torch

    from federation.model.autoencoder import AutoEncoder
    from federation.registry.package import package_model

    fx = FeatureExtractor(spec)
    rows = np.concatenate([fx.transform(np.concatenate([wire.decode(f).data for f in
                                                        _frames(k, 10)]))
                           for k in range(0, 300, 10)])
    model = AutoEncoder(spec.dim)
    model.mean.copy_(torch.from_numpy(rows.mean(axis=0)))
    model.std.copy_(torch.from_numpy(rows.std(axis=0) + 1e-3))
    pkg, _ = package_model(model, spec, rows=rows, version="bench-base", serial=0)
    cache.write_bytes(pkg)
    return pkg


def _variant(base: bytes, key: Any, **updates: Any) -> bytes:
    """``base`` with manifest updates, signed by ``key`` (None: unsigned)."""
    from edge_agent.package import pack, parse_manifest, split
    from federation.registry.package import sign_package

    if key is not None:
        return sign_package(base, key, updates)
    _, blob, model, _ = split(base)
    manifest = parse_manifest(blob)
    manifest.update(updates)
    manifest["signer_key_id"] = None
    return pack(manifest, model)


def _attacks(base: bytes, key: Any, other: Any) -> dict[str, tuple[str, bytes]]:
    """check name -> (version, package); every attack but the older serial has a higher
    serial than the baseline, so only the protection under test can refuse it."""
    hi = BASE_SERIAL + 100
    expired = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    spec: dict[str, tuple[Any, dict[str, Any]]] = {
        "unsigned_package_refused": (None, {"serial": hi + 1}),
        "foreign_key_package_refused": (other, {"serial": hi + 2}),
        "older_serial_refused": (key, {"serial": BASE_SERIAL - 1}),
        "untargeted_package_refused": (
            key, {"serial": hi + 3, "targets": [f"{SITE}/gw-other", "other-site"]}),
        "expired_package_refused": (key, {"serial": hi + 4, "not_after": expired}),
    }
    out = {}
    for i, (name, (k, upd)) in enumerate(spec.items()):
        version = f"bench-attack-{i}"
        out[name] = (version, _variant(base, k, version=version, **upd))
    return out


class _Watch:
    """Subscribes to the gateway's retained model state and health; keeps the latest."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        from edge_agent import topics

        self.state: dict[str, Any] = {}
        self.health: dict[str, Any] = {}
        self._topics = {topics.model_state(SITE, GW): "state", topics.health(SITE, GW): "health"}
        self._c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-trust-watch")
        self._c.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in self._topics])
        self._c.on_message = self._on_message
        self._c.connect("127.0.0.1", port)
        self._c.loop_start()

    def _on_message(self, _c: Any, _u: Any, m: Any) -> None:
        with contextlib.suppress(ValueError):
            setattr(self, self._topics[m.topic], json.loads(m.payload))

    def publish_model(self, package: bytes) -> None:
        from edge_agent import topics

        self._c.publish(topics.model(SITE, GW), package, qos=1, retain=True).wait_for_publish(30)

    def refused(self, reason: str) -> int:
        das = (self.state.get("streams") or {}).get("das") or {}
        return int((das.get("refused") or {}).get(reason, 0))

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.1)
        return pred()

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


class _Feeder(threading.Thread):
    """Publishes DAS frames (paced) so the agent has rows to smoke-test and windows to swap
    between."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        from edge_agent import topics

        super().__init__(name="bench-trust-feeder", daemon=True)
        self.stop_event = threading.Event()
        self._topic = topics.raw(SITE, GW, "das")
        self._c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-trust-feed")
        self._c.connect("127.0.0.1", port)
        self._c.loop_start()

    def run(self) -> None:
        k = 0
        while not self.stop_event.is_set():
            for f in _frames(k, 5):
                self._c.publish(self._topic, f, qos=0)
            k += 5
            self.stop_event.wait(0.1)  # ~50 frames/s: 2.5x real time

    def close(self) -> None:
        self.stop_event.set()
        self.join(10)
        self._c.disconnect()
        self._c.loop_stop()


def _gateway_config(d: Path, port: int, public_key: Path | None) -> dict[str, Any]:
    model: dict[str, Any] = {"latency_budget_ms": 5000.0}  # a loaded machine: trust, not speed
    model.update({"public_key": str(public_key)} if public_key else {"allow_unsigned": True})
    return {"gateway": {"site": SITE, "id": GW, "data_dir": str(d / "gateway")},
            "broker": {"port": port}, "streams": [_stream()], "model": model,
            "threshold": {"warmup_windows": 5, "warmup_s": 0}, "uplink": {"health_interval_s": 1.0}}


@contextlib.contextmanager
def _agent(d: Path, cfg: dict[str, Any], prot: Protections) -> Iterator[None]:
    """The real agent: a ``fiberwatch edge run`` subprocess; without the trust policy (a
    switched-off protection, for tests only) an in-process agent whose slots have none."""
    if not prot.trust_policy:
        with _agent_without_policy(cfg):
            yield
        return
    import tomli_w

    path = d / "gateway.toml"
    path.write_text(tomli_w.dumps(cfg))
    log = open(d / "agent.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "fiberwatch", "edge", "run", "--config",
                             str(path)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def _agent_without_policy(cfg: dict[str, Any]) -> Iterator[None]:
    from edge_agent.config import GatewayConfig
    from edge_agent.detectors.stats import RobustZDetector
    from edge_agent.hot_swap import ModelSlot
    from edge_agent.main import Deps, run

    def slot(c: Any, s: Any, public_key: bytes | None) -> ModelSlot:
        spec = s.feature_spec()
        return ModelSlot(RobustZDetector(spec.dim, feature_spec_hash=spec.hash),
                         spec_hash=spec.hash, public_key=public_key,
                         latency_budget_ms=c.model.latency_budget_ms,
                         smoke_windows=c.model.smoke_windows, window_rows=s.channels)

    stop = threading.Event()
    t = threading.Thread(target=run, args=(GatewayConfig.model_validate(cfg), stop),
                         kwargs={"deps": Deps(slot=slot)}, name="bench-trust-agent")
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(60)


def _model_checks(workdir: Path, prot: Protections) -> dict[str, dict]:
    from federation.registry.keys import generate, load_private
    from fiberwatch.services import Mosquitto

    d = workdir / "model"
    d.mkdir(parents=True, exist_ok=True)
    (priv, pub), (other, _) = generate(), generate()
    (d / "signing.pub").write_bytes(pub)
    key, other_key = load_private(priv), load_private(other)
    base = base_package(workdir)
    good = _variant(base, key, version="bench-good", serial=BASE_SERIAL)
    attacks = _attacks(base, key, other_key)
    with Mosquitto(d / "mosquitto") as broker:
        cfg = _gateway_config(d, broker.port, d / "signing.pub" if prot.signed_models else None)
        watch, feeder = _Watch(broker.port), _Feeder(broker.port)
        try:
            with _agent(d, cfg, prot):
                feeder.start()
                return _offer_all(watch, good, attacks)
        finally:
            feeder.close()
            watch.close()


def _offer_all(watch: _Watch, good: bytes, attacks: dict[str, tuple[str, bytes]]
               ) -> dict[str, dict]:
    watch.publish_model(good)
    if not watch.wait(lambda: watch.state.get("model_version") == "bench-good", 180):
        why = f"the signed baseline was never installed (state {watch.state})"[:400]
        return {n: _result(False, why) for n in attacks}
    out = {}
    for name, (version, package) in attacks.items():
        reason = MODEL_CHECKS[name]
        before, active = watch.refused(reason), watch.state.get("model_version")
        watch.publish_model(package)

        def settled(v: str = version, r: str = reason, b: int = before) -> bool:
            s = watch.state
            return watch.refused(r) > b or v in (s.get("model_version"), s.get("staged_version"))

        watch.wait(settled, 60)
        s = watch.state
        refused, kept = watch.refused(reason) > before, s.get("model_version") == active
        taken = version in (s.get("model_version"), s.get("staged_version"))
        detail = (f"refused ({reason}): {s.get('reason')}; active model still {active}"
                  if refused and kept and not taken else
                  f"NOT refused as {reason}: active {s.get('model_version')}, staged "
                  f"{s.get('staged_version')}, last {s.get('last_result')}: {s.get('reason')}")
        out[name] = _result(refused and kept and not taken, detail[:400])
    trust = watch.health.get("model_trust") or {}
    for name in out:
        out[name]["detail"] += f" | health model_trust.refused={trust.get('refused')}"
    return out


# -- Flower: SuperNode authentication ----------------------------------------------------------
def _flower_check(workdir: Path, prot: Protections) -> dict[str, dict]:
    from federation.flower.deployment import GatewayNode, SuperLink, generate_node_keys, local_tls

    d = workdir / "flower"
    tls = local_tls(d / "tls")
    for who in ("member", "stranger"):
        generate_node_keys(d / f"{who}.key", d / f"{who}.pub")
    with SuperLink(d / "link", tls=tls, node_auth=prot.node_auth) as link:
        if prot.node_auth:
            link.control.register_node(d / "member.pub")
        nodes = {who: GatewayNode(d / who, link.address, root_certificates=tls.ca,
                                  # switched off: a deployment without node keys at all
                                  auth_private_key=d / f"{who}.key" if prot.node_auth
                                  else None,
                                  node_config={"gateway-id": f"{SITE}/{who}",
                                               "normal-buffer": str(d / f"{who}.fwnb")})
                 for who in ("member", "stranger")}
        try:
            for n in nodes.values():
                n.launch()
            return {FLOWER_CHECK: _judge_nodes(link, nodes)}
        finally:
            for n in nodes.values():
                n.stop()


def _online(link: Any) -> int:
    """SuperNodes the SuperLink lists as online (``flwr supernode list``)."""
    out = json.loads(link.control.flwr("supernode", "list", "fiberwatch", "--format", "json"))
    nodes = out.get("nodes") or out.get("supernodes") or []
    return sum(1 for n in nodes if "online" in str(n.get("status", "")).lower())


def _judge_nodes(link: Any, nodes: dict[str, Any]) -> dict:
    """Passed: the stranger's SuperNode exits (turned away) while the member stays up and is
    listed online; failed as soon as two nodes are online or after a timeout."""
    stranger, member = nodes["stranger"].group.procs[0], nodes["member"].group.procs[0]
    deadline, online = time.monotonic() + 120, 0
    while time.monotonic() < deadline and stranger.poll() is None:
        online = _online(link)
        if online >= 2:
            break
        time.sleep(1.0)
    online = _online(link)
    refused = stranger.poll() not in (None, 0) and online <= 1
    member_ok = member.poll() is None and online == 1
    log = nodes["stranger"].group.tail(20000).splitlines()
    why = next((x.strip() for x in log if "Failed to initialize" in x or "rror" in x), "")
    detail = (f"stranger exit {stranger.poll()}, member "
              f"{'up' if member.poll() is None else 'exited'}, {online} node(s) online; "
              f"stranger's log: {why[:200]}")
    return _result(refused and member_ok, detail)


# -- cloud: insecure dev on a non-loopback bind -------------------------------------------------
def _bind_check(_workdir: Path, prot: Protections) -> dict[str, dict]:
    from federation.processes import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("FIBERWATCH_CLOUD_")}
    env["FIBERWATCH_CLOUD_INSECURE_DEV"] = "true"
    # the attack: the bind insecure dev must refuse (it refuses before uvicorn binds)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", prot.app, "--host", "0.0.0.0",  # noqa: S104
                             "--port", str(free_port()), "--lifespan", "on"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline and \
            not any("Uvicorn running" in x for x in lines):
        time.sleep(0.05)
    served = proc.poll() is None  # still up: it bound 0.0.0.0 (or hung)
    if served:
        proc.kill()
    proc.wait()
    reader.join(5)
    said = next((x.strip() for x in lines if "refuses to bind" in x), "")
    passed = not served and proc.returncode != 0 and bool(said)
    detail = (f"uvicorn exited {proc.returncode} before binding: {said[-200:]}" if passed else
              f"served insecure dev on 0.0.0.0 (exit {proc.returncode}): "
              f"{''.join(lines)[-200:]}")
    return {BIND_CHECK: _result(passed, detail)}
