"""The ingestion process: `run_ingest` (for a supervisor) and `main` (command line)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloud import schema
from cloud.influx import InfluxClient, InfluxError
from cloud.ingest.buffer import Backoff, Buffer
from cloud.ingest.config import IngestSettings
from cloud.ingest.deadletter import DeadLetters
from cloud.ingest.mqtt import Subscribers
from cloud.ingest.spool import Spool
from cloud.ingest.stats import IngestStats
from cloud.ingest.workers import DEFAULT_SHARE_GROUP, run_workers, worker_credentials
from cloud.ingest.writer import Writer
from edge_agent.logs import LOG_FORMAT
from edge_agent.mqtt_args import add_broker_args
from edge_agent.mqtt_client import broker_from_args

log = logging.getLogger("cloud.ingest")


def run_ingest(settings: IngestSettings, stop_event: threading.Event, *,
               stats: IngestStats | None = None,
               ready: threading.Event | None = None) -> IngestStats:
    """Ingest MQTT into InfluxDB until `stop_event` is set; returns the final counters.

    Creates the schema (retrying while InfluxDB is unreachable), subscribes, and writes.
    On stop: stops taking messages (unacknowledged QoS1 ones stay at the broker), writes
    what is buffered (retrying for at most ``drain_s``), acknowledges it, disconnects.

    Parameters
    ----------
    settings : IngestSettings
        Where MQTT and InfluxDB are, and the batching and buffer bounds.
    stop_event : threading.Event
        Set it (e.g. from a SIGTERM handler) to stop.
    stats : IngestStats, optional
        Counters to fill (pass your own to read them while it runs).
    ready : threading.Event, optional
        Set once the schema exists and the subscriber and writer run.
    """
    stats = stats or IngestStats()
    influx = InfluxClient(settings.influx_url, settings.influx_username,
                          settings.influx_password, timeout=10.0)

    def ensure() -> None:
        schema.ensure_schema(influx, settings.db, settings.retention)

    try:
        if not _until_ensured(ensure, settings, stop_event):
            return stats
        subscriber, writer, spool = _parts(settings, influx, stats, ensure)
        writer.start()
        subscriber.replay()  # summaries a killed run had received but not written
        subscriber.start()
        try:
            while not (stop_event.is_set() or subscriber.wait_subscribed(0.1)):
                pass  # connecting: paho retries in the background until the broker answers
            log.info("event=ingest_started mqtt=%s:%d influx=%s db=%s", settings.mqtt_host,
                     settings.mqtt_port, settings.influx_url, settings.db)
            if ready is not None and not stop_event.is_set():
                ready.set()
            while not stop_event.wait(settings.stats_interval_s):
                log.info("event=ingest_stats %s", _kv(stats.snapshot()))
        finally:
            subscriber.stop_accepting()
            writer.stop()
            subscriber.stop()
            if spool is not None:
                spool.close()
        log.info("event=ingest_stopped %s", _kv(stats.snapshot()))
        return stats
    finally:
        influx.close()


def _until_ensured(ensure: Callable[[], None], settings: IngestSettings,
                   stop_event: threading.Event) -> bool:
    """Call ``ensure`` until it succeeds (True), retrying with backoff while InfluxDB is
    unreachable; False if `stop_event` is set first."""
    backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
    while not stop_event.is_set():
        try:
            ensure()
            return True
        except InfluxError as exc:
            if not exc.retryable:
                raise
            log.warning("event=influx_unreachable url=%s error=%r", settings.influx_url,
                        str(exc))
            stop_event.wait(backoff.next())
    return False


def _parts(settings: IngestSettings, influx: InfluxClient, stats: IngestStats,
           ensure: Callable[[], None]) -> tuple[Subscribers, Writer, Spool | None]:
    """The subscriber and the writer around one buffer, the dead letters and the spool."""
    buffer = Buffer(settings.buffer_bytes)
    dead = DeadLetters(settings.dead_letter_path(), file_bytes=settings.dead_letter_file_bytes,
                       files=settings.dead_letter_files,
                       record_bytes=settings.dead_letter_record_bytes)
    stats.gauges.update(buffer_messages=lambda: len(buffer), buffer_bytes=lambda: buffer.nbytes,
                        dead_letters=lambda: dead.count)
    spool = (Spool(settings.spool_path(), max_bytes=settings.spool_bytes)
             if settings.spool else None)
    subscriber = Subscribers(settings, buffer, stats, dead, spool)
    writer = Writer(influx, buffer, stats, settings, ack=subscriber.ack,
                    ack_many=subscriber.ack_many, ensure_schema=ensure,
                    dead=dead, spool=spool)
    return subscriber, writer, spool


def _kv(d: dict[str, object]) -> str:
    return " ".join(f"{k}={str(v).replace(' ', '')}" for k, v in d.items())


def settings_from_args(args: argparse.Namespace) -> IngestSettings:
    """`IngestSettings` from `parser()`'s flags (passwords from the environment)."""
    return IngestSettings(
        mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port,
        broker=broker_from_args(args, args.mqtt_host, args.mqtt_port),
        mqtt_protocol=args.mqtt_protocol, client_id=args.client_id,
        share_group=args.share_group, primary=args.primary, features=args.features,
        influx_url=args.influx_url,
        influx_username=args.influx_username,
        influx_password=os.environ.get("FIBERWATCH_INFLUX_PASSWORD"), db=args.db,
        retention=schema.Retention(raw=args.raw_retention, history=args.history_retention),
        buffer_bytes=int(args.buffer_mb * (1 << 20)), dead_letter_dir=args.dead_letter_dir,
        spool_dir=args.spool_dir, spool=not args.no_spool,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fiberwatch cloud ingest",
        description="MQTT -> InfluxDB ingestion of events, features, health and model state. "
                    "Passwords come from FIBERWATCH_MQTT_PASSWORD / FIBERWATCH_INFLUX_PASSWORD.")
    d = IngestSettings()
    p.add_argument("--mqtt-host", default=d.mqtt_host)
    p.add_argument("--mqtt-port", type=int, default=d.mqtt_port)
    p.add_argument("--mqtt-protocol", choices=("5", "3.1.1"), default=d.mqtt_protocol,
                   help="MQTT version (3.1.1 for brokers without v5, e.g. NATS)")
    add_broker_args(p)
    p.add_argument("--client-id", default=d.client_id,
                   help="MQTT client id of the persistent session (default: the username; "
                        "anonymous: unique to this process)")
    p.add_argument("--influx-url", default=d.influx_url)
    p.add_argument("--influx-username")
    p.add_argument("--db", default=d.db)
    p.add_argument("--raw-retention", default=d.retention.raw, help="e.g. 24h")
    p.add_argument("--history-retention", default=d.retention.history, help="e.g. 365d")
    p.add_argument("--buffer-mb", type=float, default=d.buffer_bytes / (1 << 20),
                   help="bound of QoS0 summaries buffered while InfluxDB is down")
    p.add_argument("--dead-letter-dir",
                   help="where lines InfluxDB can never take are kept (bounded, rotated); "
                        "default: a directory under the system temp dir")
    p.add_argument("--spool-dir", help="where QoS0 summaries wait on disk until written "
                   "(they survive a crash); default: a directory under the system temp dir")
    p.add_argument("--no-spool", action="store_true",
                   help="keep QoS0 summaries in memory only (lost if the process is killed)")
    p.add_argument("--log-level", default="WARNING")
    g = p.add_argument_group("scale-out (MQTT shared subscriptions)")
    g.add_argument("--workers", type=int, default=1,
                   help="ingestion processes on this machine (> 1: they share the feature "
                        "stream, worker 0 also takes events; client ids get -0, -1, ...)")
    g.add_argument("--share-group",
                   help="take feature summaries through $share/GROUP/... (default with "
                        f"--workers > 1: {DEFAULT_SHARE_GROUP}); every process in the group, on "
                        "any machine, gets a share")
    g.add_argument("--no-primary", dest="primary", action="store_false",
                   help="features only: another process (the primary) takes events, health "
                        "and model state; needs --share-group")
    g.add_argument("--no-features", dest="features", action="store_false",
                   help="primary only: events, health and model state, one connection (for "
                        "brokers that take the login as client id; feature workers run "
                        "separately with --no-primary and logins of their own)")
    g.add_argument("--worker-logins", action="store_true",
                   help="for brokers that take the login as client id (the shipped secure "
                        "one): a primary without features on --mqtt-username USER, and N "
                        "feature workers logging in as USER-f1 .. USER-fN with the files in "
                        "the folders beside --mqtt-password-file's (`fiberwatch deploy "
                        "--ingest-workers N` writes them)")
    g.add_argument("--stats-file", help="write the final counters here as JSON at exit "
                                        "(with --workers: PATH.0, PATH.1, ...)")
    g.add_argument("--drain-timeout-s", type=float, default=60.0, help=argparse.SUPPRESS)
    return p


_LAUNCHER_ONLY = ("--workers", "--share-group", "--client-id", "--stats-file", "--no-primary",
                  "--drain-timeout-s", "--worker-logins")
_LAUNCHER_SWITCHES = ("--no-primary", "--worker-logins")  # flags without a value


def _passthrough(argv: Sequence[str]) -> list[str]:
    """`argv` without the launcher's own flags (each child gets its own values)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in _LAUNCHER_ONLY:
            skip = "=" not in a and name not in _LAUNCHER_SWITCHES
            continue
        out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run ingestion until SIGINT or SIGTERM; exit status 2 on bad arguments."""
    p = parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    if args.workers > 1 and not args.features:
        p.error("--no-features runs one process: it cannot be combined with --workers")
    launch = args.workers > 1 or args.worker_logins
    if args.worker_logins and not args.features:
        p.error("--worker-logins starts its own primary without features: drop --no-features")
    if launch and not args.share_group:
        args.share_group = DEFAULT_SHARE_GROUP
    try:
        settings = settings_from_args(args)
        if args.worker_logins:
            args.logins = worker_credentials(settings.broker_config, args.workers)
    except ValueError as exc:
        p.error(str(exc))
    if launch and not args.client_id:  # the workers' ids: this one plus -0, -1, ...
        args.client_id = settings.mqtt_client_id
    logging.basicConfig(level=args.log_level.upper(),
                        format=LOG_FORMAT)
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))
    stop = threading.Event()
    previous = _on_signals(stop)
    try:
        if launch:
            return run_workers(args, _passthrough(argv), stop)
        stats = run_ingest(settings, stop)
        if args.stats_file:
            Path(args.stats_file).write_text(json.dumps(stats.snapshot()))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def _on_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGINT/SIGTERM set `stop`; returns the previous handlers."""

    def on_signal(signum: int, _frame: object) -> None:
        log.info("event=signal signal=%d", signum)
        stop.set()

    return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
