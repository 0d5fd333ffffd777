"""`fiberwatch sim run|record|replay|info`: the DAS/DTS interrogator simulator.

``run`` publishes to MQTT (live, paced in real time by default), ``record`` writes
``.fwrec`` files without a broker, ``replay`` publishes recorded files, ``info`` summarises
one. A run is one fiber from flags, a schedule file (several gateways allowed) or
``--fleet`` (the demo's two wells and a pipeline); ground truth goes to ``--labels`` or
beside the recording as ``<name>.labels.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from fiberwatch.cli import UsageError

log = logging.getLogger("fiberwatch.sim")

_OVERRIDES = {  # flag dest -> SimConfig field
    "site": "site", "gateway": "gateway", "geometry": "geometry", "channels": "channels",
    "first_channel": "first_channel", "spacing": "spacing_m", "rate": "das_rate",
    "frame_s": "frame_s", "dts_interval": "dts_interval_s", "dtype": "das_dtype",
    "flow": "flow", "surface_per_min": "surface_per_min",
}


SCENARIO_HELP = """\
scenario kinds and keys (every kind: onset, duration, intensity, stream=das|dts|both):
  leak         channel=C; spread, cooling, tau       (DAS hiss 80-950 Hz + DTS cooling)
  sand         channels=A-B; rate                    (impulsive 450-900 Hz ringing)
  slug         channels=A-B; period, speed, duty     (periodic 1-20 Hz energy)
  dead, stuck  channels=A-B                          (zeros / held values)
  spikes       channels=A-B; rate                    (single-sample spikes)
  fiber_break  channel=C                             (noise from C to the end)
  dropped      -                                     (frames lost; intensity = probability)
intensity 1 is clearly detectable (~+10 dB in the kind's band at its centre)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="simulate DAS/DTS interrogators with labelled anomalies",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = p.add_subparsers(dest="sim_command", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter
    run = ssub.add_parser("run", help="simulate and publish to an MQTT broker",
                          epilog=SCENARIO_HELP, formatter_class=fmt)
    _add_broker(run)
    _add_sim(run)
    run.add_argument("--record", metavar="FILE", help="also record the frames sent (.fwrec; "
                     "use {site}/{gateway} in the name for several gateways)")
    run.set_defaults(func=_run)
    rec = ssub.add_parser("record", help="simulate into .fwrec files (no broker)",
                          epilog=SCENARIO_HELP, formatter_class=fmt)
    _add_sim(rec)
    rec.add_argument("--out", required=True, metavar="FILE",
                     help="recording to write ({site}/{gateway} placeholders for several)")
    rec.set_defaults(func=_record)
    rep = ssub.add_parser("replay", help="publish recorded .fwrec files to a broker")
    rep.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _add_broker(rep)
    rep.add_argument("--site", help="override the recording's site (one file only)")
    rep.add_argument("--gateway", help="override the recording's gateway (one file only)")
    rep.set_defaults(func=_replay)
    info = ssub.add_parser("info", help="summarise a .fwrec recording")
    info.add_argument("file", type=Path)
    info.set_defaults(func=_info)


def _add_broker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT",
                   help="MQTT broker (default 127.0.0.1:1883)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=True,
                      help="pace frames by their timestamps (default)")
    pace.add_argument("--fast", dest="realtime", action="store_false",
                      help="send as fast as the broker accepts")


def _add_sim(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--schedule", type=Path, metavar="FILE", help="TOML/JSON schedule")
    g.add_argument("--fleet", action="store_true",
                   help="the demo fleet: wells well-a/gw1, well-b/gw2, pipeline pipeline-1/gw3")
    g.add_argument("--scenario", action="append", default=[], metavar="SPEC",
                   help="anomaly KIND:key=value,..., e.g. leak:onset=10,duration=20,"
                   "channel=300,intensity=1 (repeatable; kinds: leak sand slug dead stuck "
                   "spikes fiber_break dropped)")
    g.add_argument("--seed", type=int, help="random seed (default: the schedule's, else 0)")
    g.add_argument("--seconds", type=float, help="run length (run: 0 = until stopped)")
    g.add_argument("--start", metavar="T", help="first sample time: 'now', ns since the epoch "
                   "or ISO 8601 (default: now for run, 2024-01-01T00:00Z for record)")
    g.add_argument("--labels", type=Path, metavar="FILE", help="write ground truth (JSONL)")
    f = p.add_argument_group("fiber (override the schedule)")
    f.add_argument("--site")
    f.add_argument("--gateway")
    f.add_argument("--geometry", choices=("well", "pipeline"))
    f.add_argument("--channels", type=int)
    f.add_argument("--first-channel", type=int)
    f.add_argument("--spacing", type=float, help="channel spacing, m (default 1)")
    f.add_argument("--rate", type=float, help="DAS sample rate, Hz (default 2000)")
    f.add_argument("--frame-s", type=float, help="DAS frame length, s (default 0.05)")
    f.add_argument("--dts-interval", type=float, help="s between DTS traces (default 1)")
    f.add_argument("--dtype", choices=("int16", "float32"), help="DAS wire dtype")
    f.add_argument("--flow", type=float, help="relative flow rate (default 1)")
    f.add_argument("--surface-per-min", type=float, help="surface disturbances per minute")


def _parse_start(text: str) -> int:
    if text == "now":
        return time.time_ns() // 1_000_000 * 1_000_000
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--start {text!r}: expected 'now', integer ns or ISO 8601") from None
    if dt.tzinfo is None:
        raise UsageError(f"--start {text!r}: give a time zone (e.g. Z)")
    return round(dt.timestamp() * 1e9)


def build_run(args: argparse.Namespace, live: bool) -> list[Any]:
    """The configured simulators (one per gateway), from the flags."""
    from sensors_sim import ConfigError, Simulator, demo_fleet, load_schedule, parse_scenario

    try:
        if args.fleet and args.schedule:
            raise UsageError("--fleet and --schedule are exclusive")
        seed = 0
        if args.fleet:
            secs = args.seconds if args.seconds is not None else 60.0
            chans = args.channels if args.channels is not None else 1024
            configs = list(demo_fleet(None if secs == 0 and live else secs, channels=chans))
        elif args.schedule:
            sched = load_schedule(args.schedule)
            configs, seed = list(sched.configs), sched.seed or 0
        else:
            from sensors_sim import SimConfig
            configs = [SimConfig()]
        seed = args.seed if args.seed is not None else seed
        changes = {field: getattr(args, dest) for dest, field in _OVERRIDES.items()
                   if getattr(args, dest) is not None}
        if args.seconds is not None and not args.fleet:
            if args.seconds == 0 and not live:
                raise UsageError("record needs --seconds > 0")
            changes["seconds"] = None if args.seconds == 0 else args.seconds
        if args.start is not None or live:
            changes["start_ns"] = _parse_start(args.start or "now")
        if len(configs) > 1 and ({"site", "gateway"} & set(changes) or args.scenario):
            raise UsageError("--site/--gateway/--scenario need a single-gateway run")
        scenarios = tuple(parse_scenario(s) for s in args.scenario)
        configs = [replace(c, **changes, scenarios=c.scenarios + scenarios) for c in configs]
        if not live and any(c.seconds is None for c in configs):
            raise UsageError("record needs a finite --seconds")
        return [Simulator(c, seed) for c in configs]
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _write_labels(path: Path | None, sims: list[Any]) -> None:
    from sensors_sim import write_labels

    if path is not None:
        write_labels(path, [lb for s in sims for lb in s.labels()])
        print(f"labels: {path}")


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An Event set by SIGINT/SIGTERM while the block runs (main thread only)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: object) -> None:
        log.info("event=signal signal=%s", signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _progress(total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", file=sys.stderr, disable=None, mininterval=0.5,
                dynamic_ncols=True)


def _broker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--broker {text!r}: expected HOST:PORT")
    return host, int(port)


def _publish(sources: list[Any], args: argparse.Namespace, total: int | None,
             writers: list[Any]) -> int:
    from sensors_sim.publisher import publish_streams

    host, port = _broker(args.broker)
    with _stop_on_signals() as stop, _progress(total) as bar:
        def on_frame(i: int, _stream: str, frame: bytes) -> None:
            if writers:
                writers[i].write(frame)
            bar.update(1)

        t0 = time.monotonic()
        try:
            stats = publish_streams(sources, host, port, realtime=args.realtime, stop=stop,
                                    on_frame=on_frame)
        except ConnectionError as exc:
            raise UsageError(str(exc)) from None
    secs = time.monotonic() - t0
    print(f"frames={stats.frames} bytes={stats.bytes} lost={stats.lost} "
          + " ".join(f"{k}={v}" for k, v in sorted(stats.by_stream.items()))
          + f" seconds={secs:.1f} stopped={'yes' if stop.is_set() else 'no'}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from sensors_sim import ConfigError
    from sensors_sim.publisher import Source
    from sensors_sim.runs import open_writers, per_gateway_paths

    sims = build_run(args, live=True)
    _broker(args.broker)
    try:
        paths = per_gateway_paths(args.record, sims) if args.record else []
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    _write_labels(args.labels, sims)
    writers = open_writers(sims, paths)
    try:
        sources = [Source(s.config.site, s.config.gateway, s.frames()) for s in sims]
        counts = [s.n_frames() for s in sims]
        total = None if None in counts else sum(sum(c.values()) for c in counts)
        return _publish(sources, args, total, writers)
    finally:
        for w in writers:
            w.close()


def _record(args: argparse.Namespace) -> int:
    from sensors_sim import ConfigError
    from sensors_sim.runs import per_gateway_paths, record

    sims = build_run(args, live=False)
    try:
        paths = per_gateway_paths(args.out, sims)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    _write_labels(args.labels, sims)
    total = sum(sum(s.n_frames().values()) for s in sims)
    with _stop_on_signals() as stop, _progress(total) as bar:
        writers = record(sims, paths, stop=stop, on_frame=lambda *_: bar.update(1))
    for w in writers:
        print(f"recorded: {w.path} frames={w.frames} bytes={w.bytes}")
    return 130 if stop.is_set() else 0


def _replay(args: argparse.Namespace) -> int:
    from sensors_sim import ConfigError, RecordingError
    from sensors_sim.runs import recorded_source

    if len(args.files) > 1 and (args.site or args.gateway):
        raise UsageError("--site/--gateway override needs a single file")
    try:
        sources = [recorded_source(p, args.site, args.gateway) for p in args.files]
    except (OSError, RecordingError, ConfigError) as exc:
        raise UsageError(str(exc)) from None
    return _publish(sources, args, None, [])


def _info(args: argparse.Namespace) -> int:
    from edge_agent import wire
    from sensors_sim import RecordingError
    from sensors_sim.runs import summarise

    try:
        summary = summarise(args.file)
    except (OSError, RecordingError, wire.FrameError) as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    print(json.dumps(summary, indent=2))
    return 0
