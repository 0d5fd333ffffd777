"""`fiberwatch edge run --config FILE [--once-seconds N]`: one gateway agent.

Runs until SIGINT/SIGTERM (or for N seconds), then shuts down cleanly: stops ingest, drains
the pipeline, emits open events, leaves undelivered events in the durable outbox. Logs are
structured ``key=value`` on stderr, warnings only unless ``-v``. Imports only what the
``edge`` extra installs.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

from fiberwatch.cli import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edge", help="run a gateway agent (streaming detection)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    esub = p.add_subparsers(dest="edge_command", metavar="ACTION", required=True)
    run = esub.add_parser("run", help="run the agent for one gateway config",
                          description="Run the gateway agent: MQTT frames in, events out.")
    run.add_argument("--config", required=True, type=Path, metavar="FILE",
                     help="gateway config (TOML; schema edge_agent/config.py)")
    run.add_argument("--once-seconds", type=float, metavar="N",
                     help="stop after N seconds and print the final counters as JSON")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from edge_agent.config import ConfigError, load_gateway_config
    from edge_agent.mqtt_client import MqttConfigError
    from edge_agent.store_forward import OutboxError

    if args.once_seconds is not None and not args.once_seconds > 0:
        raise UsageError("--once-seconds must be > 0")
    try:
        cfg = load_gateway_config(args.config)
    except ConfigError as exc:
        raise UsageError(_one_line(str(exc))) from None
    from edge_agent.main import install_signal_handlers, run

    stop = threading.Event()
    restore = install_signal_handlers(stop)
    timer = None
    if args.once_seconds is not None:
        timer = threading.Timer(args.once_seconds, stop.set)
        timer.start()
    try:
        result = run(cfg, stop)
    except (ConfigError, MqttConfigError) as exc:
        raise UsageError(f"{args.config}: {_one_line(str(exc))}") from None
    except OutboxError as exc:  # another agent runs on this data_dir
        raise UsageError(_one_line(str(exc))) from None
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
        restore()
    if args.once_seconds is not None:
        print(json.dumps(result, default=str))
    return 0


def _one_line(message: str) -> str:
    """Several validation problems become one line, separated by '; '."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())
