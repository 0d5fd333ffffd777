"""`fiberwatch cloud ingest --workers 2` against real Mosquitto and influxd: the broker splits
the feature stream between the workers (MQTT shared subscription), every summary is stored
once and received by exactly one worker; events go to the primary alone; SIGTERM to the
launcher stops every worker cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.influx import InfluxClient
from cloud.ingest import IngestSettings, IngestStats, run_ingest
from cloud.ingest.service import parser
from cloud.ingest.workers import run_workers
from edge_agent import topics
from edge_agent.config import BrokerConfig
from fiberwatch.services import Influxd, Mosquitto
from tests.integration._polling import wait_for
from tests.integration.test_ingest import make_event, summary

pytestmark = pytest.mark.integration
S = 1_000_000_000
GATEWAYS = ("g1", "g2", "g3")
PER_GATEWAY = 150


class Launcher:
    """The ``python -m cloud.ingest --workers N`` process and its log lines."""

    def __init__(self, broker: Mosquitto, influx: Influxd, stats: Path, workers: int) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloud.ingest", "--workers", str(workers), "--mqtt-port",
             str(broker.port), "--influx-url", influx.url, "--stats-file", str(stats),
             "--log-level", "INFO"],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def pids(self) -> list[int]:
        line = next(x for x in self.lines if "event=workers_started" in x)
        return [int(p) for p in line.split("pids=")[1].split()[0].split(",")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stored(client: InfluxClient, measurement: str) -> int:
    rp = "raw" if measurement == "features" else "events"
    field = "score_max" if measurement == "features" else "peak_score"
    rows = client.rows(f'SELECT count("{field}") FROM "fiberwatch"."{rp}"."{measurement}"')
    return int(rows[0]["count"]) if rows else 0


def test_two_workers_split_the_stream_and_store_each_summary_once(
        mosquitto: Mosquitto, influxd: Influxd, tmp_path: Path) -> None:
    run = Launcher(mosquitto, influxd, tmp_path / "stats.json", workers=2)
    try:
        wait_for(lambda: run.count("event=ingest_started") == 2, 60, "2 workers subscribed")
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="scale-out-publisher")
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        now = time.time_ns() // S * S
        for k in range(PER_GATEWAY):
            for gw in GATEWAYS:
                s = replace(summary(now - (PER_GATEWAY - k) * S, k, groups=128), gateway=gw)
                pub.publish(topics.features("s1", gw, "das"), s.to_packed(), qos=0)
        events = [make_event(i) for i in range(5)]
        for e in events:
            pub.publish(topics.events("s1", "g1"), e.to_json(), qos=1).wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()
        client = InfluxClient(influxd.url)
        total = PER_GATEWAY * len(GATEWAYS)
        wait_for(lambda: _stored(client, "features") == total, 60, f"{total} summaries stored")
        wait_for(lambda: _stored(client, "event") == len(events), 30, "5 events stored")
        pids = run.pids()
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(60) == 0
    assert not any(_alive(p) for p in pids), "a worker outlived the launcher"
    shares = [json.loads((tmp_path / f"stats.json.{i}").read_text()) for i in range(2)]
    got = [s["received"].get("features", 0) for s in shares]
    assert sum(got) == total, f"received {got}: duplicates or losses"  # each exactly once
    assert min(got) > 0, f"one worker got nothing: {got}"
    assert shares[0]["received"].get("event", 0) == len(events)  # the primary alone
    assert "event" not in shares[1]["received"]
    assert _stored(client, "features") == total
    client.close()


def test_a_worker_that_exits_stops_the_launcher_with_status_1() -> None:
    args = parser().parse_args(["--workers", "2"])
    stop = threading.Event()
    # an unknown flag: each child exits 2 at once (argparse), the launcher notices
    assert run_workers(args, ["--no-such-flag"], stop) == 1
    assert not stop.is_set()


def _secure_broker(tmp: Path, logins: dict[str, str]) -> Mosquitto:
    """Mosquitto with logins, an ACL and ``use_username_as_clientid`` as the shipped cloud
    broker has them (TLS left out: it does not change who gets which message)."""
    passwd = tmp / "passwd"
    for i, (user, pw) in enumerate(logins.items()):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwd),
                        user, pw], check=True, capture_output=True)
    read = "".join(f"topic read fiberwatch/v1/+/+/{t}\n"
                   for t in ("events", "features/+", "health", "model_state"))
    acl = "".join(f"user {u}\n{read}\n" for u in logins if u != "pub")
    (tmp / "acl").write_text(acl + "user pub\ntopic write fiberwatch/v1/#\n")
    m = Mosquitto(tmp / "mosquitto")
    m.conf_path.write_text(m.conf_path.read_text().replace(
        "allow_anonymous true", f"allow_anonymous false\npassword_file {passwd}\n"
        f"acl_file {tmp / 'acl'}\nuse_username_as_clientid true"))
    return m


def test_logins_as_client_ids_a_features_free_primary_and_two_feature_workers(
        influxd: Influxd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logins = {"ingest": "pw0", "ingest-f1": "pw1", "ingest-f2": "pw2", "pub": "pwp"}
    with _secure_broker(tmp_path, logins) as broker:
        runs = []
        for user, kw in (("ingest", {"features": False}), ("ingest-f1", {"primary": False}),
                         ("ingest-f2", {"primary": False})):
            monkeypatch.setenv(f"FW_TEST_PW_{user.replace('-', '_')}", logins[user])
            cfg = BrokerConfig(port=broker.port, username=user,
                               password_env=f"FW_TEST_PW_{user.replace('-', '_')}")
            settings = IngestSettings(broker=cfg, share_group="fw", influx_url=influxd.url, **kw)
            stats, stop, ready = IngestStats(), threading.Event(), threading.Event()
            t = threading.Thread(target=run_ingest, args=(settings, stop),
                                 kwargs={"stats": stats, "ready": ready})
            t.start()
            runs.append((stats, stop, t))
            assert ready.wait(30), f"{user} did not subscribe"
        try:
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub")
            pub.username_pw_set("pub", "pwp")
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            now = time.time_ns() // S * S
            for k in range(120):
                pub.publish(topics.features("s1", "g1", "das"),
                            summary(now - (120 - k) * S, k, groups=64).to_packed(), qos=1)
            for e in (make_event(1), make_event(2)):
                pub.publish(topics.events("s1", "g1"), e.to_json(), qos=1).wait_for_publish(10)
            pub.disconnect()
            pub.loop_stop()
            client = InfluxClient(influxd.url)
            wait_for(lambda: _stored(client, "features") == 120, 60, "120 summaries stored")
            wait_for(lambda: _stored(client, "event") == 2, 30, "2 events stored")
        finally:
            for _, stop, _t in runs:
                stop.set()
            for _, _, t in runs:
                t.join(30)
        got = [s.snapshot()["received"] for s, _, _ in runs]
        assert "features" not in got[0] and got[0].get("event") == 2
        shares = [g.get("features", 0) for g in got[1:]]
        assert sum(shares) == 120 and min(shares) > 0, shares
        assert "event" not in got[1] and "event" not in got[2]
        client.close()


def _gateway_client(broker: Mosquitto, lay: Path, site: str, gw: str) -> mqtt.Client:
    """A gateway's uplink login over TLS, as deployed (`fiberwatch deploy`'s files)."""
    from fiberwatch.deploy.generate import Layout
    from fiberwatch.deploy.spec import gateway_user

    user = gateway_user(site, gw)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user)
    c.username_pw_set(user, Layout(lay).password(user))
    c.tls_set(ca_certs=str(lay / "single" / "certs" / "ca.crt"))
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    return c


def test_two_workers_with_their_own_logins_on_the_secure_broker(
        influxd: Influxd, tmp_path: Path) -> None:
    """The shipped secure broker (TLS, logins as client ids, the generated ACL) with the logins
    `fiberwatch deploy --ingest-workers 2` writes: ``--workers 2 --worker-logins`` runs a
    primary (events) and two feature workers, each summary stored and received once."""
    from fiberwatch.deploy.generate import Layout, write_single_broker
    from fiberwatch.deploy.spec import DeploySpec, Site

    spec = DeploySpec("127.0.0.1", (Site("s1", "127.0.0.1", GATEWAYS),), ingest_workers=2)
    lay = tmp_path / "mqtt"
    secure = write_single_broker(spec, Layout(lay), server_names=("127.0.0.1",))
    stats = tmp_path / "stats.json"
    with Mosquitto(tmp_path / "mosquitto", secure_dir=secure) as broker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud.ingest", "--workers", "2", "--worker-logins",
             "--mqtt-port", str(broker.port), "--mqtt-username", "ingest",
             "--mqtt-password-file", str(Layout(lay).client_dir("ingest") / "password"),
             "--mqtt-ca", str(secure / "certs" / "ca.crt"), "--influx-url", influxd.url,
             "--stats-file", str(stats), "--log-level", "INFO"],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True).start()
        try:
            wait_for(lambda: sum("event=ingest_started" in x for x in list(lines)) == 3, 60,
                     "a primary and 2 feature workers subscribed")
            clients = {gw: _gateway_client(broker, lay, "s1", gw) for gw in GATEWAYS}
            now = time.time_ns() // S * S
            for k in range(PER_GATEWAY):
                for gw, c in clients.items():
                    s = replace(summary(now - (PER_GATEWAY - k) * S, k, groups=128), gateway=gw)
                    c.publish(topics.features("s1", gw, "das"), s.to_packed(), qos=1)
            events = [make_event(i) for i in range(5)]
            for e in events:
                clients["g1"].publish(topics.events("s1", "g1"), e.to_json(),
                                      qos=1).wait_for_publish(10)
            for c in clients.values():
                c.disconnect()
                c.loop_stop()
            client = InfluxClient(influxd.url)
            total = PER_GATEWAY * len(GATEWAYS)
            wait_for(lambda: _stored(client, "features") == total, 60, f"{total} summaries")
            wait_for(lambda: _stored(client, "event") == len(events), 30, "5 events stored")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, "".join(lines[-20:])
    shares = [json.loads(stats.with_name(f"stats.json.{i}").read_text())["received"]
              for i in range(3)]
    assert "features" not in shares[0] and shares[0].get("event") == len(events)
    got = [s.get("features", 0) for s in shares[1:]]
    assert sum(got) == total and min(got) > 0, f"received {got}: each summary exactly once?"
    assert all("event" not in s for s in shares[1:])
    assert _stored(client, "features") == total  # nothing written twice either
    assert not any("not authori" in x.lower() or "refused" in x.lower() for x in lines), lines
    client.close()
