"""The flags of `fiberwatch sim` (`fiberwatch.commands.sim`): their definitions, and the
simulators (`build_run`) and broker address (`parse_broker`) they stand for."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_agent import mqtt_args
from fiberwatch.cli import UsageError

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
  valve        channels=A-B; period, on              (benign: 150-400 Hz stroke every period)
  dead, stuck  channels=A-B                          (zeros / held values)
  spikes       channels=A-B; rate                    (single-sample spikes)
  fiber_break  channel=C                             (noise from C to the end)
  dropped      -                                     (frames lost; intensity = probability)
intensity 1 is clearly detectable (~+10 dB in the kind's band at its centre)."""


def add_broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT",
                   help="MQTT broker (default 127.0.0.1:1883)")
    mqtt_args.add_broker_args(p)  # per gateway: e.g. --mqtt-username '{site}.{gateway}...'
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=True,
                      help="pace frames by their timestamps (default)")
    pace.add_argument("--fast", dest="realtime", action="store_false",
                      help="send as fast as the broker accepts")


def add_sim_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--schedule", type=Path, metavar="FILE", help="TOML/JSON schedule")
    g.add_argument("--fleet", action="store_true",
                   help="the demo fleet: wells well-a/gw1, well-b/gw2, pipeline pipeline-1/gw3")
    g.add_argument("--scenario", action="append", default=[], metavar="SPEC",
                   help="anomaly KIND:key=value,..., e.g. leak:onset=10,duration=20,"
                   "channel=300,intensity=1 (repeatable; kinds: leak sand slug dead stuck "
                   "spikes fiber_break dropped; benign: valve)")
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


def broker_config(args: argparse.Namespace) -> Any:
    """The simulator's `BrokerConfig`: address, login templates and TLS from the flags."""
    from edge_agent.mqtt_client import MqttConfigError, broker_from_args

    host, port = parse_broker(args.broker)
    try:
        return broker_from_args(args, host, port)
    except MqttConfigError as exc:
        raise UsageError(str(exc)) from None


def parse_broker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--broker {text!r}: expected HOST:PORT")
    return host, int(port)
