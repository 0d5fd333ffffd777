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
from pathlib import Path
from typing import Any

from fiberwatch.cli import UsageError
from fiberwatch.commands._sim_args import (
    SCENARIO_HELP,
    add_broker_args,
    add_sim_args,
    broker_config,
    build_run,
    parse_broker,
)

__all__ = ["SCENARIO_HELP", "build_run", "register"]

log = logging.getLogger("fiberwatch.sim")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="simulate DAS/DTS interrogators with labelled anomalies",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = p.add_subparsers(dest="sim_command", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter
    run = ssub.add_parser("run", help="simulate and publish to an MQTT broker",
                          epilog=SCENARIO_HELP, formatter_class=fmt)
    add_broker_args(run)
    add_sim_args(run)
    run.add_argument("--record", metavar="FILE", help="also record the frames sent (.fwrec; "
                     "use {site}/{gateway} in the name for several gateways)")
    run.set_defaults(func=_run)
    rec = ssub.add_parser("record", help="simulate into .fwrec files (no broker)",
                          epilog=SCENARIO_HELP, formatter_class=fmt)
    add_sim_args(rec)
    rec.add_argument("--out", required=True, metavar="FILE",
                     help="recording to write ({site}/{gateway} placeholders for several); "
                     "with --format dasdae|prodml a directory")
    rec.add_argument("--format", default="fwrec", choices=("fwrec", "dasdae", "prodml"),
                     help="fwrec (wire frames), or an interrogator's files: DAS as DASDAE or "
                     "PRODML HDF5 (the bridge extra), DTS as CSV (default fwrec)")
    rec.add_argument("--file-s", type=float, default=10.0,
                     help="--format dasdae|prodml: seconds of DAS per file (default 10)")
    rec.add_argument("--dts-traces", type=int, default=10,
                     help="--format dasdae|prodml: DTS traces per CSV file (default 10)")
    rec.set_defaults(func=_record)
    rep = ssub.add_parser("replay", help="publish recorded .fwrec files to a broker")
    rep.add_argument("files", nargs="+", type=Path, metavar="FILE")
    add_broker_args(rep)
    rep.add_argument("--site", help="override the recording's site (one file only)")
    rep.add_argument("--gateway", help="override the recording's gateway (one file only)")
    rep.set_defaults(func=_replay)
    info = ssub.add_parser("info", help="summarise a .fwrec recording")
    info.add_argument("file", type=Path)
    info.set_defaults(func=_info)


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


def _publish(sources: list[Any], args: argparse.Namespace, total: int | None,
             writers: list[Any]) -> int:
    from sensors_sim.publisher import publish_streams

    broker = broker_config(args)
    with _stop_on_signals() as stop, _progress(total) as bar:
        def on_frame(i: int, _stream: str, frame: bytes) -> None:
            if writers:
                writers[i].write(frame)
            bar.update(1)

        t0 = time.monotonic()
        try:
            stats = publish_streams(sources, broker.host, broker.port, realtime=args.realtime,
                                    stop=stop, on_frame=on_frame, broker=broker)
        except (ConnectionError, ValueError) as exc:  # ValueError: MqttConfigError
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
    parse_broker(args.broker)
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
    if args.format != "fwrec":
        return _record_files(args, sims)
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


def _record_files(args: argparse.Namespace, sims: list[Any]) -> int:
    """Write each run as an interrogator's files (`sensors_sim.files`)."""
    from sensors_sim import ConfigError
    from sensors_sim.files import write_run
    from sensors_sim.runs import per_gateway_paths

    try:
        dirs = per_gateway_paths(args.out, sims)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    _write_labels(args.labels, sims)
    with _stop_on_signals() as stop:
        for sim, d in zip(sims, dirs, strict=True):
            try:
                files = write_run(sim, d, das_format=args.format, file_s=args.file_s,
                                  dts_traces=args.dts_traces, stop=stop)
            except (ConfigError, OSError) as exc:
                raise UsageError(str(exc)) from None
            except ImportError as exc:
                raise UsageError(f"--format {args.format} needs the bridge extra "
                                 f"(pip install 'fiberwatch[bridge]'): {exc}") from None
            print(f"written: {d} files={len(files)} format={args.format}")
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
