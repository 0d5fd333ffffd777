"""`fiberwatch bridge run|replay|status`: real interrogators' files into the pipeline.

``run`` watches the directory an interrogator writes (``[bridge] watch_dir``), reads each file
once it is complete (DAS through DASCore: PRODML, DASDAE, Silixa, TDMS, Febus, Terra15, ...;
DTS text/CSV), converts it to wire frames and publishes them to the site broker at QoS 0 on
the gateway's raw/{das,dts} topics, remembering in ``state_file`` what it has published.
``replay`` publishes a directory of recordings once, paced by their timestamps. ``status``
prints the state's counts and refused files. Config: a ``[bridge]`` TOML (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from fiberwatch.cli import UsageError

log = logging.getLogger("fiberwatch.bridge")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bridge", help="publish an interrogator's DAS/DTS files as frames",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="bridge_command", metavar="ACTION", required=True)
    r = bsub.add_parser("run", help="watch the directory and publish new files (a service)")
    r.add_argument("--config", type=Path, required=True, help="bridge TOML ([bridge] table)")
    r.add_argument("--once", action="store_true",
                   help="publish what is complete now, then exit (no watching)")
    r.set_defaults(func=_run)
    rp = bsub.add_parser("replay", help="publish a directory of recordings, paced")
    rp.add_argument("directory", type=Path, metavar="DIR")
    rp.add_argument("--config", type=Path, required=True,
                    help="bridge TOML: broker, site, gateway and the streams ([bridge] "
                    "watch_dir and state_file are not used)")
    rp.add_argument("--speed", default="1x",
                    help="'10x' = ten times real time, 'max' = as fast as possible (default 1x)")
    rp.set_defaults(func=_replay)
    st = bsub.add_parser("status", help="files published and refused, from the state file")
    st.add_argument("--config", type=Path, required=True)
    st.set_defaults(func=_status)


def parse_speed(text: str) -> float | None:
    """'10x' or '10' -> 10.0; 'max' -> None (no pacing)."""
    t = text.strip().lower()
    if t in ("max", "fast"):
        return None
    try:
        v = float(t.removesuffix("x"))
    except ValueError:
        raise UsageError(f"--speed {text!r}: expected e.g. 10x, 0.5x or max") from None
    if not 0 < v < 1e6:
        raise UsageError(f"--speed {text!r}: must be > 0")
    return v


def _load(path: Path) -> Any:
    from edge_agent.bridge.config import load_bridge_config
    from edge_agent.config import ConfigError

    try:
        return load_bridge_config(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _check_dascore(cfg: Any) -> None:
    if cfg.das is None:
        return
    try:
        import dascore  # noqa: F401
    except ImportError:
        raise UsageError("DAS files need DASCore: pip install 'fiberwatch[bridge]'") from None


def _stop_event() -> threading.Event:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, lambda *_: stop.set())
    return stop


def _publisher(cfg: Any, stop: threading.Event, *, wait: bool) -> Any:
    """A connected publisher. A broker that refuses us is a usage error; one that cannot be
    reached is one too for a replay (`wait` False), while the service (`wait` True) goes on
    and publishes once paho's reconnects get through (it must survive a broker that starts
    after it)."""
    from edge_agent.bridge.publish import BridgePublisher
    from edge_agent.mqtt_client import MqttConfigError

    try:
        pub = BridgePublisher(cfg.broker, cfg.bridge.site, cfg.bridge.gateway, stop=stop)
    except MqttConfigError as exc:
        raise UsageError(str(exc)) from None
    if pub.wait_connected(15.0):
        return pub
    where = f"{cfg.broker.host}:{cfg.broker.port}"
    if pub.refused or not wait:
        why = f" (refused: {pub.refused})" if pub.refused else ""
        pub.close()
        raise UsageError(f"no connection to the broker {where}{why}")
    log.warning("event=broker_unreachable broker=%s detail=retrying", where)
    return pub


def _run(args: argparse.Namespace) -> int:
    from edge_agent.bridge.service import Bridge
    from edge_agent.bridge.state import State, StateError

    cfg = _load(args.config)
    _check_dascore(cfg)
    if not cfg.bridge.watch_dir.is_dir():
        raise UsageError(f"{args.config}: bridge.watch_dir {cfg.bridge.watch_dir} is not a "
                         "directory")
    try:
        state = State(cfg.bridge.state_file)
    except StateError as exc:
        raise UsageError(str(exc)) from None
    stop = _stop_event()
    pub = _publisher(cfg, stop, wait=True)
    bridge = Bridge(cfg, pub, state, stop=stop)
    log.info("event=started watch_dir=%s", cfg.bridge.watch_dir)
    try:
        if args.once:
            while bridge.step() and not stop.is_set():
                pass
        else:
            bridge.run()
    finally:
        pub.close()
        counts = state.counts()
        state.close()
    print(json.dumps({**bridge.stats.to_dict(), "state": counts}))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from edge_agent.bridge.service import replay

    cfg = _load(args.config)
    _check_dascore(cfg)
    speed = parse_speed(args.speed)
    if not args.directory.is_dir():
        raise UsageError(f"{args.directory}: not a directory")
    stop = _stop_event()
    pub = _publisher(cfg, stop, wait=False)
    from edge_agent.bridge.publish import PublishLost

    try:
        stats = replay(cfg, args.directory, pub, speed=speed, stop=stop)
    except PublishLost as exc:
        raise UsageError(f"the broker connection dropped during the replay: {exc}") from None
    finally:
        pub.close()
    print(json.dumps(stats.to_dict()))
    return 0


def _status(args: argparse.Namespace) -> int:
    import sqlite3

    cfg = _load(args.config)
    path = cfg.bridge.state_file
    if not path.exists():
        raise UsageError(f"{path}: no state yet (the bridge has not run)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        counts = dict(db.execute("SELECT status, COUNT(*) FROM files GROUP BY status"))
        errors = [{"file": n, "error": e} for n, e in db.execute(
            "SELECT name, error FROM files WHERE status = 'error' ORDER BY name")]
        streams = {s: {"next_seq": q, "end_ns": t} for s, q, t in db.execute(
            "SELECT stream, next_seq, end_ns FROM streams")}
    finally:
        db.close()
    print(json.dumps({"files": counts, "streams": streams, "errors": errors}, indent=2))
    return 0
