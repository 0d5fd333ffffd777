"""The alerting process: stored events -> rules -> queued notifications -> receivers.

``fiberwatch cloud alerting --config alerts.toml`` runs `run_alerting` until SIGINT/SIGTERM.
It reads what ingestion stored in InfluxDB (`cloud.alerting.feed`), fires and de-duplicates
alerts (`cloud.alerting.engine`) and delivers them (`cloud.alerting.delivery`) from the
SQLite queue the API shares for acknowledge/resolve.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud import schema
from cloud.alerting.delivery import Dispatcher, MqttSender, Sender, WebhookSender
from cloud.alerting.drift import DriftFeed
from cloud.alerting.engine import Alerter
from cloud.alerting.feed import EventFeed, RowsClient
from cloud.alerting.state import AlertState
from cloud.influx import InfluxClient, InfluxError
from edge_agent.config import ConfigError
from firmware_configs.alerting import AlertingConfig

log = logging.getLogger("cloud.alerting")


@dataclass
class Running:
    """What a running alerting loop exposes (tests and the demo read it)."""

    state: AlertState
    alerter: Alerter
    dispatcher: Dispatcher
    feed: EventFeed
    drift: DriftFeed | None = None
    errors: dict[str, int] = field(default_factory=dict)


def load_config(path: Path | str) -> AlertingConfig:
    """The validated alerting config; `ConfigError` names the file and the field."""
    from firmware_configs.check import load_kind

    return load_kind(path, "alerting", AlertingConfig)


def build_senders(config: AlertingConfig, mqtt_client: Any | None) -> dict[str, Sender]:
    senders: dict[str, Sender] = {}
    for r in config.receivers:
        if r.type == "webhook":
            senders[r.name] = WebhookSender(r)
        elif mqtt_client is not None:
            senders[r.name] = MqttSender(r, mqtt_client)
        else:
            log.warning("event=mqtt_receiver_without_broker receiver=%s (its alerts stay "
                        "queued until alerting runs with a broker)", r.name)
    return senders


def run_alerting(config: AlertingConfig, client: RowsClient, stop: threading.Event, *,
                 db: str = schema.DB, mqtt_client: Any | None = None,
                 ready: threading.Event | None = None,
                 running: list[Running] | None = None) -> Running:
    """Poll stored events and deliver alerts until `stop` is set; returns the final state."""
    state = AlertState(config.alerting.state_db)
    alerter = Alerter(config, state)
    dispatcher = Dispatcher(config, state, build_senders(config, mqtt_client))
    feed = EventFeed(client, db=db, lookback_s=config.alerting.lookback_s)
    run = Running(state, alerter, dispatcher, feed, DriftFeed(client, config.alerting, db=db))
    if running is not None:
        running.append(run)
    dispatcher.start()
    log.info("event=alerting_started rules=%d receivers=%d db=%s", len(config.rules),
             len(config.receivers), config.alerting.state_db)
    if ready is not None:
        ready.set()
    try:
        while True:
            _poll(run)
            if stop.wait(config.alerting.poll_interval_s):
                break
    finally:
        dispatcher.stop()
        state.close()
        log.info("event=alerting_stopped fired=%d renotified=%d sent=%d failures=%d",
                 alerter.fired, alerter.renotified, dispatcher.sent, dispatcher.failures)
    return run


def _poll(run: Running) -> None:
    try:
        events = run.feed.poll() + (run.drift.poll() if run.drift is not None else [])
    except InfluxError as exc:
        run.errors["influx"] = run.errors.get("influx", 0) + 1
        log.warning("event=feed_failed error=%r", str(exc)[:200])
        return
    changed = False
    for e in events:
        try:
            changed |= run.alerter.observe(e) in ("fired", "renotified")
        except (KeyError, TypeError, ValueError) as exc:  # a malformed stored row
            run.errors["event"] = run.errors.get("event", 0) + 1
            log.warning("event=bad_stored_event id=%r error=%r", e.get("id"), str(exc)[:200])
    if changed:
        run.dispatcher.wake()


def parser() -> argparse.ArgumentParser:
    from edge_agent.mqtt_args import add_broker_args

    p = argparse.ArgumentParser(
        prog="fiberwatch cloud alerting",
        description="Alerts from stored events to Alertmanager-compatible webhooks and MQTT. "
                    "Passwords come from FIBERWATCH_INFLUX_PASSWORD / FIBERWATCH_MQTT_PASSWORD.")
    p.add_argument("--config", type=Path, required=True, help="alerting TOML (rules, receivers)")
    p.add_argument("--influx-url", default="http://127.0.0.1:8086")
    p.add_argument("--influx-username")
    p.add_argument("--db", default=schema.DB)
    p.add_argument("--mqtt-host", help="broker for mqtt receivers (none: they stay queued)")
    p.add_argument("--mqtt-port", type=int, default=8883)
    add_broker_args(p)
    p.add_argument("--log-level", default="WARNING")
    return p


def _mqtt(args: argparse.Namespace) -> Any | None:
    if not args.mqtt_host:
        return None
    from edge_agent.mqtt_client import broker_from_args, make_client

    broker = broker_from_args(args, args.mqtt_host, args.mqtt_port)
    client = make_client(broker, f"fiberwatch-alerting-{os.getpid()}")
    client.loop_start()
    return client


def main(argv: Sequence[str] | None = None) -> int:
    """Run alerting until SIGINT or SIGTERM; exit status 2 on a bad config or arguments."""
    p = parser()
    args = p.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        p.exit(2, f"{exc}\n")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT,
                                                                      signal.SIGTERM)}
    influx = InfluxClient(args.influx_url, args.influx_username,
                          os.environ.get("FIBERWATCH_INFLUX_PASSWORD"), timeout=10.0)
    mqtt_client = _mqtt(args)
    try:
        run_alerting(config, influx, stop, db=args.db, mqtt_client=mqtt_client)
    except ValueError as exc:  # e.g. a bearer token variable that is not set
        p.exit(2, f"{exc}\n")
    finally:
        if mqtt_client is not None:
            mqtt_client.loop_stop()
            mqtt_client.disconnect()
        influx.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
