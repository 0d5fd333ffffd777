"""Operator labels to the gateways: each stored label, as an `edge_agent.labels.Label`, on its
gateway's retained label topic (`edge_agent.topics.label`), QoS1.

The API stores labels (``POST /api/v1/anomalies/{id}/labels``); this module publishes them.
Retained, one topic per label: publishing a label twice is harmless, and a gateway that was
offline receives every label of its own when it subscribes again. The broker's ACL lets only
the cloud's ``labels`` login write these topics (`fiberwatch.deploy.acl`).

Run it once (``fiberwatch cloud labels --once``) or as a service that publishes new labels
every ``--every`` seconds until SIGTERM (`run_publisher`; the demo runs it so, under the
``labels`` login over TLS). `publish_labels` is the function behind both;
``fiberwatch fl label-round`` calls it before a federated round.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from edge_agent import topics
from edge_agent.labels import Label

log = logging.getLogger(__name__)

#: API label -> gateway label ("note" is not published)
TO_GATEWAY = {"confirmed": "anomaly", "false_alarm": "false_alarm",
              "maintenance": "maintenance"}


class LabelSource(Protocol):
    def all_labels(self, since_ns: int = 0) -> list[dict[str, Any]]: ...
    def anomaly(self, event_id: str) -> dict[str, Any] | None: ...


def to_message(label: dict[str, Any], event: dict[str, Any]) -> Label | None:
    """The gateway message of one stored label (`cloud.store.Store.labels` item) of ``event``
    (`cloud.store.Store.anomaly`); None for a note."""
    kind = TO_GATEWAY.get(str(label.get("label")))
    if kind is None:
        return None
    return Label(
        id=f"{label['event_id']}:{int(label['time_ns'])}", event_id=str(label["event_id"]),
        site=str(event["site"]), gateway=str(event["gateway"]), stream=str(event["stream"]),
        start_ns=int(event["start_ns"]), end_ns=int(event["end_ns"]),
        ch_start=int(event["ch_start"]), ch_end=int(event["ch_end"]), label=kind,
        kind=str(label.get("kind") or (event.get("class_hint") if kind == "anomaly" else "")
                 or ""),
        created_ns=int(label["time_ns"]), user=str(label.get("user") or ""))


def messages(store: LabelSource, since_ns: int = 0) -> list[Label]:
    """The gateway messages of every label stored since ``since_ns``."""
    out: list[Label] = []
    events: dict[str, dict[str, Any] | None] = {}
    for lb in store.all_labels(since_ns):
        eid = lb["event_id"]
        if eid not in events:
            events[eid] = store.anomaly(eid)
        event = events[eid]
        if event is not None and (m := to_message(lb, event)) is not None:
            out.append(m)
    return out


def publish_labels(store: LabelSource, client: Any, *, since_ns: int = 0,
                   timeout_s: float = 10.0) -> list[Label]:
    """Publish (retained, QoS1) every label stored since ``since_ns``; waits for the broker's
    acknowledgements (RuntimeError if one is refused or missing). ``client``: a connected,
    looping paho client (`edge_agent.mqtt_client.make_client`)."""
    sent = messages(store, since_ns)
    if sent and not client.is_connected():
        raise RuntimeError("not connected to the broker: labels stay stored, retry later")
    infos = [client.publish(topics.label(m.site, m.gateway, m.key), m.to_json(), qos=1,
                            retain=True) for m in sent]
    for m, info in zip(sent, infos, strict=True):
        info.wait_for_publish(timeout_s)
        if not info.is_published() or info.rc != 0:
            raise RuntimeError(f"label {m.id} not acknowledged by the broker (rc={info.rc})")
    if sent:
        log.info("event=labels_published count=%d", len(sent))
    return sent


def run_publisher(store: LabelSource, client: Any, stop: threading.Event, *,
                  every_s: float = 2.0) -> int:
    """Publish new labels every ``every_s`` until ``stop``; the number published."""
    since, total = 0, 0
    while not stop.is_set():
        try:
            sent = publish_labels(store, client, since_ns=since)
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("event=labels_not_published error=%s", exc)
        else:
            total += len(sent)
            if sent:
                since = max(m.created_ns for m in sent) + 1
        stop.wait(every_s)
    return total


def _stop_on_signals(stop: threading.Event) -> None:
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def parser() -> argparse.ArgumentParser:
    """The command line of ``fiberwatch cloud labels`` (also the systemd unit's,
    deploy/systemd/fiberwatch-labels.service)."""
    from edge_agent.mqtt_args import add_broker_args

    p = argparse.ArgumentParser(
        prog="fiberwatch cloud labels", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Passwords come from FIBERWATCH_INFLUX_PASSWORD / FIBERWATCH_MQTT_PASSWORD "
               "(or --mqtt-password-file).")
    p.add_argument("--influx-url", default="http://127.0.0.1:8086")
    p.add_argument("--influx-username")
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, default=8883)
    p.add_argument("--once", action="store_true", help="publish every label once and exit")
    p.add_argument("--every", type=float, default=2.0,
                   help="seconds between looks for new labels (default %(default)s)")
    p.add_argument("--log-level", default="WARNING")
    add_broker_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from cloud.influx import InfluxClient
    from cloud.store import Store
    from edge_agent.mqtt_client import broker_from_args, make_client

    p = parser()
    args = p.parse_args(argv)
    if not 0 < args.every <= 3600:  # nan and inf too
        p.error("--every must be > 0 and <= 3600 (seconds)")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    _stop_on_signals(stop)  # before the connection wait: SIGTERM ends that too
    store = Store(InfluxClient(args.influx_url, args.influx_username,
                               os.environ.get("FIBERWATCH_INFLUX_PASSWORD")))
    client = make_client(broker_from_args(args, args.mqtt_host, args.mqtt_port),
                         client_id=f"fiberwatch-labels-{os.getpid()}")
    client.loop_start()
    deadline = time.monotonic() + 30
    while not client.is_connected() and time.monotonic() < deadline and not stop.is_set():
        stop.wait(0.1)
    try:
        if args.once:
            sys.stdout.write(f"published {len(publish_labels(store, client))} label(s)\n")
            return 0
        if not stop.is_set():  # SIGTERM during the connection wait: nothing started
            log.info("event=labels_publisher_started every_s=%g connected=%s", args.every,
                     client.is_connected())
            run_publisher(store, client, stop, every_s=args.every)
        return 0
    finally:
        client.loop_stop()
        client.disconnect()

if __name__ == "__main__":
    raise SystemExit(main())
