"""`fiberwatch demo`: the whole system on one machine, started for real and stopped cleanly.

Mosquitto and influxd (Debian's) in a local data directory, the cloud (ingestion, API and
dashboard), the Flower SuperLink with the rollout controller, three gateway agents (two
wells, one pipeline) with SuperNodes for the wells, and the simulator feeding all three with
a schedule of anomalies. A federated round and a canary rollout run while it runs.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fiberwatch.demo_setup import (
    DemoLayout,
    DemoMqtt,
    ensure_keys,
    ensure_mqtt,
    write_gateway_configs,
    write_schedule,
    write_tokens,
)
from fiberwatch.demo_status import StatusBoard
from fiberwatch.services import Influxd, Mosquitto, free_port
from fiberwatch.supervisor import Supervisor

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
    fl_started: bool = False
    fl_child: object | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def dashboard(self) -> str:
        return f"{self.api_url}/#token={self.token}"


def _fw(*args: str) -> list[str]:
    return [sys.executable, "-m", "fiberwatch", *args]


def _initial_model(opts: DemoOptions, layout: DemoLayout, sup: Supervisor, cfg_path: Path) -> Path:
    """Train and sign the first int8 model on simulated normal data (cached by channels and
    feature spec: a package for another spec, e.g. an older version, is not reused)."""
    from edge_agent.config import load_gateway_config

    layout.models.mkdir(parents=True, exist_ok=True)
    das = load_gateway_config(cfg_path).stream("das")
    tag = das.feature_spec().hash[:12] if das is not None else "none"
    pkg = layout.models / f"initial-{opts.channels or 'full'}-{tag}.fwpkg"
    if pkg.exists():
        return pkg
    ckpt = layout.models / "initial.ckpt"
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
    return pkg


def start(opts: DemoOptions) -> DemoRun:
    """Start everything; raise (after stopping what started) if a part fails to come up."""
    layout = DemoLayout(opts.data_dir.resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    for stale in ("state", "registry", "flower", "gateways"):
        _rmtree(layout.root / stale)
    sup, mqtt = Supervisor(layout.logs), ensure_mqtt(layout)  # TLS, logins, per-gateway ACL
    broker = Mosquitto(layout.root / "mosquitto", secure_dir=mqtt.broker_dir)
    influx = Influxd(layout.root / "influxd")
    run: DemoRun | None = None
    try:
        broker.start()
        influx.start()
        ensure_keys(layout)
        superlink_port = free_port()
        configs = write_gateway_configs(layout, broker_port=broker.port,
                                        superlink=f"127.0.0.1:{superlink_port}",
                                        channels=opts.channels, package=None, mqtt=mqtt)
        pkg = _initial_model(opts, layout, sup, layout.config("well-a"))
        from federation.registry import Registry

        reg = Registry(layout.registry)
        rec = reg.add(pkg.read_bytes(), state="candidate", metrics={"source": "demo initial"})
        reg.promote(rec.version, to="production", reason="demo initial model", actor="demo")
        configs = write_gateway_configs(layout, broker_port=broker.port,
                                        superlink=f"127.0.0.1:{superlink_port}",
                                        channels=opts.channels, package=pkg, mqtt=mqtt)
        write_schedule(layout, configs, seconds=opts.seconds, leak_channel=opts.leak_channel,
                       leak_onset=opts.leak_onset_s)
        token = write_tokens(layout)
        api_port = opts.api_port or free_port()
        sup.start("ingest", _fw("cloud", "ingest", "--mqtt-port", str(broker.port),
                                "--influx-url", influx.url, *mqtt.flags("ingest")))
        sup.start("api", _fw("cloud", "serve", "--port", str(api_port), "--influx", influx.url,
                             "--registry", str(layout.registry), "--tokens", str(layout.tokens)))
        gw_args: list[str] = []
        for cfg in configs.values():
            gw_args += ["--gateway", f"{cfg.gateway.site}/{cfg.gateway.id}"]
        sup.start("fl-server", _fw("fl", "server", "--workdir", str(layout.root / "flower"),
                                   "--insecure", "--port", str(superlink_port), "--broker",
                                   f"127.0.0.1:{broker.port}", *mqtt.flags("rollout"),
                                   "--registry", str(layout.registry),
                                   "--canary", "demo/well-a", "--canary-window",
                                   str(opts.canary_window_s), *gw_args))
        for name in configs:
            sup.start(f"edge-{name}", _fw("edge", "run", "--config", str(layout.config(name))))
        for name in FL_GATEWAYS:
            sup.start(f"fl-node-{name}", _fw("fl", "node", "--config", str(layout.config(name)),
                                             "--insecure", "--workdir",
                                             str(layout.root / "flower" / name)))
        t0_ns = time.time_ns()
        sim_args = ["sim", "run", "--schedule", str(layout.schedule), "--broker",
                    f"127.0.0.1:{broker.port}", "--realtime", "--labels", str(layout.labels),
                    "--start", str(t0_ns), *mqtt.flags("{site}.{gateway}.interrogator"),
                    *(["--seconds", str(opts.seconds)] if opts.seconds is not None else [])]
        sup.start("sim", _fw(*sim_args))
        run = DemoRun(layout, broker, influx, sup, f"http://127.0.0.1:{api_port}", token, t0_ns,
                      rec.version, mqtt)
        return run
    except BaseException:
        sup.stop_all()
        influx.stop()
        broker.stop()
        raise


def start_federated_round(run: DemoRun, rounds: int) -> None:
    """One federated training run over the wells' SuperNodes; it packages a candidate."""
    lay = run.layout
    port = _superlink_port(lay)
    run.fl_child = run.supervisor.start("fl-run", _fw(
        "fl", "run", "--superlink", f"127.0.0.1:{port}", "--insecure", "--rounds", str(rounds),
        "--min-nodes", str(len(FL_GATEWAYS)), "--registry", str(lay.registry), "--signing-key",
        str(lay.signing_key), "--influx-url", run.influx.url, "--results-dir",
        str(lay.root / "flower" / "results")))
    run.fl_started = True


def _superlink_port(layout: DemoLayout) -> int:
    from edge_agent.config import load_gateway_config

    cfg = load_gateway_config(layout.config("well-a"))
    return int(cfg.federation.superlink.rsplit(":", 1)[1])


def stop(run: DemoRun) -> None:
    run.supervisor.stop_all()
    run.influx.stop()
    run.broker.stop()


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def main(opts: DemoOptions) -> int:
    run = start(opts)
    print(f"fiberwatch demo: dashboard {run.dashboard}", flush=True)
    print(f"fiberwatch demo: API {run.api_url}/docs  token {run.token}  logs {run.layout.logs}",
          file=sys.stderr, flush=True)
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
