"""`fiberwatch demo [--seconds N]`: the whole system on one machine (see fiberwatch.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fiberwatch.cli import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the whole system on this machine (Ctrl-C stops everything)",
        description="Starts Mosquitto, influxd, the cloud (ingestion, API, dashboard, alerting "
                    "to a webhook receiver it starts and an MQTT topic), Flower, "
                    "three gateway agents and the simulator; prints the dashboard address and "
                    "a live status line; runs a federated round and a canary rollout.")
    p.add_argument("--seconds", type=float, help="stop after N seconds (default: until Ctrl-C)")
    p.add_argument("--data-dir", type=Path, default=Path(".fiberwatch/demo"),
                   help="where services keep their data and logs (default .fiberwatch/demo)")
    p.add_argument("--channels", type=int, default=256,
                   help="DAS channels per gateway (default 256; 0 = the configs' full size)")
    p.add_argument("--port", type=int, default=8000, help="dashboard/API port (0 = any free)")
    p.add_argument("--fl-after", type=float, default=45.0,
                   help="seconds before the federated round starts (default 45)")
    p.add_argument("--alert-webhook", metavar="URL",
                   help="POST alerts (Alertmanager webhook JSON) here instead of to the demo's "
                        "own receiver; https, or http on loopback")
    p.add_argument("--alert-min-severity", default="medium",
                   choices=("low", "medium", "high", "critical"),
                   help="events below this raise no alert (default medium)")
    p.add_argument("--valve", metavar="GATEWAY:LO-HI",
                   help="a benign valve stroking on these channels of one gateway (e.g. "
                        "well-a:80-87): a recurring false alarm to label in the dashboard")
    p.add_argument("--valve-period", type=float, default=15.0,
                   help="seconds between valve strokes (default 15)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from edge_agent.config import ConfigError
    from fiberwatch.demo import DemoOptions, main, parse_valve
    from fiberwatch.services import ServiceError

    if args.seconds is not None and args.seconds <= 0:
        raise UsageError("--seconds must be > 0")
    if args.channels < 0:
        raise UsageError("--channels must be >= 0")
    if args.valve is not None:
        try:
            parse_valve(args.valve)
        except ValueError as exc:
            raise UsageError(f"--valve: {exc}") from None
    opts = DemoOptions(data_dir=args.data_dir, seconds=args.seconds,
                       channels=args.channels or None, api_port=args.port,
                       fl_after_s=args.fl_after, alert_webhook=args.alert_webhook,
                       alert_min_severity=args.alert_min_severity, valve=args.valve,
                       valve_period_s=args.valve_period)
    try:
        return main(opts)
    except ServiceError as exc:
        raise UsageError(str(exc)) from None
    except ConfigError as exc:  # e.g. a plain-http --alert-webhook off loopback
        raise UsageError(str(exc)) from None
