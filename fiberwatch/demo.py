"""`fiberwatch demo`: the whole system on one machine, started for real and stopped cleanly.

Mosquitto and influxd (Debian's) in a local data directory, the cloud (ingestion, API and
dashboard, alerting to a webhook receiver the demo starts and to the MQTT alert topic), the
Flower SuperLink with the rollout controller, three gateway agents (two wells, one pipeline)
with SuperNodes for the wells, and the simulator feeding all three with a schedule of
anomalies. A federated round and a canary rollout run while it runs.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config import GatewayConfig
from federation.processes import wait_until
from fiberwatch.demo_alerts import WebhookReceiver
from fiberwatch.demo_setup import (
    DemoLayout,
    DemoMqtt,
    ensure_flower_tls,
    ensure_keys,
    ensure_mqtt,
    write_gateway_configs,
    write_schedule,
    write_tokens,
)
from fiberwatch.demo_status import StatusBoard
from fiberwatch.services import Influxd, Mosquitto, free_port
from fiberwatch.supervisor import Child, Supervisor

log = logging.getLogger(__name__)
FL_GATEWAYS = ("well-a", "well-b")


@dataclass
class DemoOptions:
    data_dir: Path = Path(".fiberwatch/demo")
    seconds: float | None = None
    channels: int | None = 256
    api_port: int = 0
    fl_after_s: float = 45.0
    fl_rounds: int = 2
    leak_channel: int | None = None
    leak_onset_s: float = 40.0
    train_seconds: float = 20.0
    canary_window_s: float = 60.0
    alert_webhook: str | None = None  # None: the demo's own receiver (`WebhookReceiver`)
    alert_min_severity: str = "medium"  # events below this raise no alert
    #: a benign valve (`sensors_sim` kind ``valve``) stroking on one gateway's channels:
    #: ``"GATEWAY:LO-HI"`` (e.g. ``"well-a:80-87"``); the recurring false alarm an operator
    #: labels (issue 16). None: no valve
    valve: str | None = None
    valve_onset_s: float = 20.0
    valve_period_s: float = 15.0
    valve_intensity: float = 1.0  # the stroke's tone, in multiples of ~3 x the background
    #: more leaks on well A (10 s each) every N s after the first, each on other channels
    #: (`repeated_leaks`); None: one leak
    leak_every_s: float | None = None


@dataclass
class DemoRun:
    """Handles of a running demo (the end-to-end test reads them)."""

    layout: DemoLayout
    broker: Mosquitto
    influx: Influxd
    supervisor: Supervisor
    api_url: str
    token: str
    t0_ns: int
    initial_version: str
    mqtt: DemoMqtt
    gateways: tuple[str, ...] = ()  # the demo gateways' names
    fl_started: bool = False
    fl_child: Child | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    alert_webhook: str = ""  # where alerts are POSTed
    receiver: WebhookReceiver | None = None  # the demo's own webhook receiver, if it runs one

    @property
    def dashboard(self) -> str:
        return f"{self.api_url}/#token={self.token}"


def _fw(*args: str) -> list[str]:
    return [sys.executable, "-m", "fiberwatch", *args]


def _fresh_layout(opts: DemoOptions) -> DemoLayout:
    """The data directory, without the previous run's state (models and keys are kept)."""
    layout = DemoLayout(opts.data_dir.resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    for stale in ("state", "registry", "flower", "gateways"):
        _rmtree(layout.root / stale)
    layout.alerts_received.unlink(missing_ok=True)
    return layout


def _initial_model(opts: DemoOptions, layout: DemoLayout, sup: Supervisor, cfg_path: Path,
                   pkg: Path) -> None:
    """Train and sign the first int8 model on simulated normal data into ``pkg``. The
    trained package is cached by channels and feature spec (a package for another spec, e.g.
    an older version, is not reused)."""
    import shutil

    from edge_agent.config import load_gateway_config

    das = load_gateway_config(cfg_path).stream("das")
    tag = das.feature_spec().hash[:12] if das is not None else "none"
    cached = layout.models / f"initial-{opts.channels or 'full'}-{tag}.fwpkg"
    if not cached.exists():
        _train_initial(opts, layout, sup, cfg_path, cached)
    shutil.copyfile(cached, pkg)


def _train_initial(opts: DemoOptions, layout: DemoLayout, sup: Supervisor, cfg_path: Path,
                   pkg: Path) -> None:
    layout.models.mkdir(parents=True, exist_ok=True)
    ckpt = pkg.with_suffix(".ckpt")  # beside its cached package (a label round starts there)
    for name, argv in (
        ("model-train", _fw("model", "train", "--sim", "--config", str(cfg_path), "--stream",
                            "das", "--channels", str(opts.channels or 512), "--seconds",
                            str(opts.train_seconds), "--runs", "2", "--out", str(ckpt))),
        ("model-convert", _fw("model", "convert", str(ckpt), "--key", str(layout.signing_key),
                              "--version", "demo-1", "--out", str(pkg))),
    ):
        print(f"demo: {name.replace('-', ' ')} ...", file=sys.stderr, flush=True)
        child = sup.start(name, argv)
        if child.proc.wait() != 0:
            raise RuntimeError(f"{name} failed:\n{child.log_tail()}")


def _register_initial(layout: DemoLayout, pkg: Path) -> str:
    """The initial package into a fresh registry, promoted to production; its version."""
    from federation.registry.store import Registry

    reg = Registry(layout.registry, public_key=layout.public_key.read_bytes())
    rec = reg.add(pkg.read_bytes(), state="candidate", metrics={"source": "demo initial"})
    reg.promote(rec.version, to="production", reason="demo initial model", actor="demo")
    return rec.version


def _start_cloud(sup: Supervisor, layout: DemoLayout, broker: Mosquitto, influx: Influxd,
                 mqtt: DemoMqtt, api_port: int) -> None:
    """Ingestion (MQTT -> InfluxDB), alerting (TLS, login ``alerting``), the label publisher
    (operator labels -> their gateways; TLS, login ``labels``) and the HTTP API with the
    dashboard (acknowledge/resolve in alerting's state)."""
    sup.start("ingest", _fw("cloud", "ingest", "--mqtt-port", str(broker.port),
                            "--influx-url", influx.url, *mqtt.flags("ingest")))
    sup.start("alerting", _fw("cloud", "alerting", "--config", str(layout.alerting_config),
                              "--influx-url", influx.url, "--mqtt-host", "127.0.0.1",
                              "--mqtt-port", str(broker.port), *mqtt.flags("alerting"),
                              "--log-level", "INFO"))
    sup.start("labels", _fw("cloud", "labels", "--influx-url", influx.url, "--mqtt-host",
                            "127.0.0.1", "--mqtt-port", str(broker.port), *mqtt.flags("labels"),
                            "--every", "1", "--log-level", "INFO"))
    sup.start("api", _fw("cloud", "serve", "--port", str(api_port), "--influx", influx.url,
                         "--registry", str(layout.registry), "--tokens", str(layout.tokens),
                         "--model-public-key", str(layout.public_key),
                         "--alerting", str(layout.alerting_config)))


def _alerting(opts: DemoOptions, layout: DemoLayout, api_port: int) -> WebhookReceiver | None:
    """The rules file; the demo's webhook receiver unless `opts` names a webhook."""
    from fiberwatch import demo_alerts

    receiver = None
    url = opts.alert_webhook
    if url is None:
        receiver = WebhookReceiver(layout.alerts_received).start()
        url = receiver.url
    demo_alerts.write_config(layout.alerting_config, state_db=layout.root / "state" /
                             "alerts.sqlite", webhook_url=url,
                             min_severity=opts.alert_min_severity,
                             external_url=f"http://127.0.0.1:{api_port}/")
    return receiver


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _log_shows(child: Child, text: str, offset: int) -> bool:
    with open(child.log_path, "rb") as f:
        f.seek(offset)
        return text.encode() in f.read()


def _start_superlink(sup: Supervisor, layout: DemoLayout, opts: DemoOptions, tls: Any,
                     port: int, broker: Mosquitto, configs: dict[str, GatewayConfig],
                     mqtt: DemoMqtt) -> Callable[[], None]:
    """The SuperLink (TLS, SuperNode authentication with the wells' keys registered) and the
    canary rollout (verifies with the public key, re-signs rollbacks); returns a function
    that waits until it serves."""
    args = ["--workdir", str(layout.root / "flower"), "--ssl-ca", str(tls.ca), "--ssl-cert",
            str(tls.cert), "--ssl-key", str(tls.key), "--port", str(port), "--broker",
            f"127.0.0.1:{broker.port}", *mqtt.flags("rollout"), "--registry",
            str(layout.registry), "--public-key", str(layout.public_key), "--signing-key",
            str(layout.signing_key), "--canary", "demo/well-a", "--canary-window",
            str(opts.canary_window_s)]
    for cfg in configs.values():
        args += ["--gateway", f"{cfg.gateway.site}/{cfg.gateway.id}"]
    for name in FL_GATEWAYS:
        args += ["--register-node", str(layout.node_key(name).with_suffix(".pub"))]
    offset = _log_size(layout.logs / "fl-server.log")
    child = sup.start("fl-server", _fw("fl", "server", *args))

    def wait() -> None:
        wait_until(lambda: _log_shows(child, "SuperLink listening", offset), 120,
                   "the SuperLink to listen", error=RuntimeError,
                   failed=lambda: None if child.alive() else child.log_tail())
    return wait


def _start_gateways(sup: Supervisor, layout: DemoLayout, opts: DemoOptions,
                    configs: dict[str, GatewayConfig], broker: Mosquitto, mqtt: DemoMqtt,
                    superlink_port: int, tls: Any) -> None:
    """The SuperLink with the rollout over every gateway, each gateway's agent, and the
    SuperNodes of the `FL_GATEWAYS` (after their keys are registered)."""
    wait_flower = _start_superlink(sup, layout, opts, tls, superlink_port, broker, configs, mqtt)
    for name in configs:
        sup.start(f"edge-{name}", _fw("edge", "run", "--config", str(layout.config(name))))
    wait_flower()  # the SuperNode keys are registered before any node connects
    for name in FL_GATEWAYS:
        sup.start(f"fl-node-{name}", _fw("fl", "node", "--config", str(layout.config(name)),
                                         "--workdir", str(layout.root / "flower" / name)))


def _start_sim(sup: Supervisor, layout: DemoLayout, opts: DemoOptions, broker: Mosquitto,
               mqtt: DemoMqtt) -> int:
    """The simulator on the schedule, in real time; its start (ns since the epoch)."""
    t0_ns = time.time_ns()
    sim_args = ["sim", "run", "--schedule", str(layout.schedule), "--broker",
                f"127.0.0.1:{broker.port}", "--realtime", "--labels", str(layout.labels),
                "--start", str(t0_ns), *mqtt.flags("{site}.{gateway}.interrogator")]
    if opts.seconds is not None:
        sim_args += ["--seconds", str(opts.seconds)]
    sup.start("sim", _fw(*sim_args))
    return t0_ns


def parse_valve(spec: str) -> tuple[str, int, int]:
    """``"GATEWAY:LO-HI"`` -> (gateway, lo, hi); ValueError otherwise."""
    from fiberwatch.demo_setup import DEMO_GATEWAYS

    gw, _, chans = spec.partition(":")
    lo, _, hi = chans.partition("-")
    if gw not in DEMO_GATEWAYS or not (lo.isdigit() and hi.isdigit() and int(lo) <= int(hi)):
        raise ValueError(f"expected GATEWAY:LO-HI with a gateway of {DEMO_GATEWAYS}, "
                         f"got {spec!r}")
    return gw, int(lo), int(hi)


def repeated_leaks(opts: DemoOptions, hours: float = 1.0) -> list[tuple[float, int]]:
    """``(onset s, channel)`` of the leaks repeated every ``leak_every_s`` on well A: from
    40 s after the first, each 8 channels on from the last (a fresh threshold group), clear
    of the valve's channels."""
    if opts.leak_every_s is None:
        return []
    n = opts.channels or 1024
    first = opts.leak_channel if opts.leak_channel is not None else int(n * 0.3)
    lo, hi = (-1, -1)
    if opts.valve is not None and parse_valve(opts.valve)[0] == "well-a":
        _, lo, hi = parse_valve(opts.valve)
    chans = [c for c in ((first + 8 * k) % n for k in range(1, n // 8 + 1))
             if not lo - 8 <= c <= hi + 8 and 6 <= c < n - 6] or [first]
    start = opts.leak_onset_s + max(opts.leak_every_s, 40.0)
    count = int(hours * 3600 // opts.leak_every_s)
    return [(start + k * opts.leak_every_s, chans[k % len(chans)]) for k in range(count)]


def _extra_scenarios(opts: DemoOptions) -> dict[str, list[dict[str, Any]]]:
    """Per gateway: the valve (`DemoOptions.valve`) and the repeated leaks."""
    out: dict[str, list[dict[str, Any]]] = {
        "well-a": [{"kind": "leak", "onset": t, "duration": 10.0, "channel": ch}
                   for t, ch in repeated_leaks(opts)]}
    if opts.valve is not None:
        gw, lo, hi = parse_valve(opts.valve)
        out.setdefault(gw, []).append({
            "kind": "valve", "onset": opts.valve_onset_s, "duration": 24 * 3600.0,
            "channels": f"{lo}-{hi}", "period": opts.valve_period_s, "on": 2.0,
            "intensity": opts.valve_intensity})
    return out


def start(opts: DemoOptions) -> DemoRun:
    """Start everything; raise (after stopping what started) if a part fails to come up."""
    layout = _fresh_layout(opts)
    sup, mqtt = Supervisor(layout.logs), ensure_mqtt(layout)  # TLS, logins, per-gateway ACL
    broker = Mosquitto(layout.root / "mosquitto", secure_dir=mqtt.broker_dir)
    influx = Influxd(layout.root / "influxd")
    receiver = None
    try:
        broker.start()
        influx.start()
        ensure_keys(layout)
        tls = ensure_flower_tls(layout, FL_GATEWAYS)
        superlink_port = free_port()
        pkg = layout.models / f"initial-{opts.channels or 'full'}.fwpkg"
        configs = write_gateway_configs(layout, broker_port=broker.port,
                                        superlink=f"127.0.0.1:{superlink_port}",
                                        channels=opts.channels, package=pkg, mqtt=mqtt)
        _initial_model(opts, layout, sup, layout.config("well-a"), pkg)
        version = _register_initial(layout, pkg)
        write_schedule(layout, configs, seconds=opts.seconds, leak_channel=opts.leak_channel,
                       leak_onset=opts.leak_onset_s, extra=_extra_scenarios(opts))
        token = write_tokens(layout)
        api_port = opts.api_port or free_port()
        receiver = _alerting(opts, layout, api_port)
        _start_cloud(sup, layout, broker, influx, mqtt, api_port)
        _start_gateways(sup, layout, opts, configs, broker, mqtt, superlink_port, tls)
        t0_ns = _start_sim(sup, layout, opts, broker, mqtt)
        return DemoRun(layout, broker, influx, sup, f"http://127.0.0.1:{api_port}", token, t0_ns,
                       version, mqtt, gateways=tuple(configs), receiver=receiver,
                       alert_webhook=receiver.url if receiver else str(opts.alert_webhook))
    except BaseException:
        if receiver is not None:
            receiver.stop()
        sup.stop_all()
        influx.stop()
        broker.stop()
        raise


def start_federated_round(run: DemoRun, rounds: int, *, labels: bool = False) -> None:
    """One federated training run over the wells' SuperNodes; it packages a candidate.
    ``labels``: a label round (`fiberwatch.label_round`) continuing from the model the
    gateways run (the previous round's weights, else the initial checkpoint) with their
    operator labels (publish them first: `fiberwatch.label_round.publish_site_labels`)."""
    lay = run.layout
    port = _superlink_port(lay)
    run.fl_child = run.supervisor.start("fl-run", _fw(
        "fl", "run", "--superlink", f"127.0.0.1:{port}", "--root-certificates",
        str(lay.flower_tls / "ca.pem"), "--rounds", str(rounds),
        "--min-nodes", str(len(FL_GATEWAYS)), "--registry", str(lay.registry), "--signing-key",
        str(lay.signing_key), "--influx-url", run.influx.url, "--results-dir",
        str(lay.root / "flower" / "results"), *(_label_round_args(lay) if labels else [])))
    run.fl_started = True


def _label_round_args(layout: DemoLayout) -> list[str]:
    """``--init-weights``: the last round's weights, else the newest initial checkpoint."""
    prev = layout.root / "flower" / "results" / "final_weights.npz"
    if not prev.exists():
        ckpts = sorted(layout.models.glob("initial-*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not ckpts:
            raise RuntimeError(f"no initial checkpoint in {layout.models}: train one first")
        prev = ckpts[-1]
    return ["--init-weights", str(prev)]


def _superlink_port(layout: DemoLayout) -> int:
    from edge_agent.config import load_gateway_config

    cfg = load_gateway_config(layout.config("well-a"))
    return int(cfg.federation.superlink.rsplit(":", 1)[1])


def stop(run: DemoRun) -> None:
    if run.receiver is not None:
        run.receiver.stop()
    run.supervisor.stop_all()
    run.influx.stop()
    run.broker.stop()


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def trust_line(layout: DemoLayout) -> str:
    """What the demo trusts: the model-signing key, Flower's TLS and node keys."""
    from edge_agent.package import key_id

    return (f"signed models only (key {key_id(layout.public_key.read_bytes())}, serials, "
            f"targets, expiry enforced); Flower over TLS with SuperNode authentication "
            f"({len(FL_GATEWAYS)} node keys registered)")


def alerts_line(run: DemoRun) -> str:
    """Where alerts go: the webhook (and what the demo's receiver writes) and the topic."""
    from fiberwatch.demo_alerts import ALERT_TOPIC

    taken = (f" (the demo's receiver; alerts it takes: {run.layout.alerts_received})"
             if run.receiver is not None else "")
    return (f"alerts (rules {run.layout.alerting_config}) -> webhook {run.alert_webhook}"
            f"{taken} and MQTT {ALERT_TOPIC} (login alerting, TLS)")


def main(opts: DemoOptions) -> int:
    run = start(opts)
    print(f"fiberwatch demo: dashboard {run.dashboard}", flush=True)
    print(f"fiberwatch demo: API {run.api_url}/docs  token {run.token}  logs {run.layout.logs}",
          file=sys.stderr, flush=True)
    print(f"fiberwatch demo: {trust_line(run.layout)}", file=sys.stderr, flush=True)
    print(f"fiberwatch demo: {alerts_line(run)}", file=sys.stderr, flush=True)
    board = StatusBoard(run)
    deadline = None if opts.seconds is None else time.monotonic() + opts.seconds
    began = time.monotonic()
    try:
        board.start()
        while not run.stop.wait(1.0):
            if not run.fl_started and time.monotonic() - began >= opts.fl_after_s:
                start_federated_round(run, opts.fl_rounds)
            dead = [c for c in run.supervisor.dead()
                    if c.name not in ("fl-run", "model-train", "model-convert")
                    and not (c.name == "sim" and c.proc.returncode == 0)]
            if dead:
                print(f"\nfiberwatch demo: {dead[0].name} exited:\n{dead[0].log_tail()}",
                      file=sys.stderr)
                return 1
            board.render()
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
        print("\nfiberwatch demo: stopping ...", file=sys.stderr, flush=True)
        stop(run)
    print(board.summary(), flush=True)
    return 0
