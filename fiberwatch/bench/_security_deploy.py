"""A secure deployment on loopback for `fiberwatch bench security` and its tests.

Files come from the `fiberwatch deploy` generator exactly as for a real site: a CA, server
certificates, a login per gateway/service and the ACLs. Processes: the cloud broker, the
site broker with its bridge to the cloud (both real Mosquitto running the generated config),
influxd, ingestion (``python -m cloud.ingest``) on the cloud broker, optionally the cloud API
(viewer and admin tokens) and one gateway agent (gateway B) on the site broker.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from edge_agent import topics
from fiberwatch.deploy import generate
from fiberwatch.deploy.broker_conf import Placement, bridge_block
from fiberwatch.deploy.spec import DeploySpec, Site, bridge_user, gateway_user, raw_user
from fiberwatch.services import LOOPBACK, Influxd, Mosquitto, free_port
from fiberwatch.supervisor import Supervisor

SITE, GW_A, GW_B = "s1", "gw-a", "gw-b"


@dataclass
class Deployment:
    """Handles the checks use; `start`/`stop` own every process."""

    workdir: Path
    with_api: bool = True
    with_agent: bool = True
    spec: DeploySpec = field(default_factory=lambda: DeploySpec(
        LOOPBACK, (Site(SITE, LOOPBACK, (GW_A, GW_B)),)))
    cloud: Mosquitto | None = None
    site: Mosquitto | None = None
    influx: Influxd | None = None
    sup: Supervisor | None = None
    api_url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def lay(self) -> generate.Layout:
        return generate.Layout(self.workdir / "deploy")

    @property
    def ca(self) -> Path:
        return self.lay.ca.cert

    def password(self, user: str) -> str:
        return self.lay.password(user)

    def start(self) -> Deployment:
        try:
            self._generate()
            self._start_brokers()
            self.influx = Influxd(self.workdir / "influxd")
            self.influx.start()
            self.sup = Supervisor(self.workdir / "logs")
            self._start_ingest()
            self._wait_ready()
            if self.with_api:
                self._start_api()
            if self.with_agent:
                self._start_agent()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.sup is not None:
            self.sup.stop_all()
        for svc in (self.influx, self.site, self.cloud):
            if svc is not None:
                svc.stop()

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _generate(self) -> None:
        generate.write_certs(self.spec, self.lay)
        generate.write_creds(self.spec, self.lay)
        generate.write_acls(self.spec, self.lay)

    def _start_brokers(self) -> None:
        self.cloud = Mosquitto(self.workdir / "cloud-mq", secure_dir=self.lay.broker_dir(None))
        self.cloud.start()
        site = self.spec.sites[0]
        place = Placement(install_dir=self.lay.broker_dir(site.name).resolve())
        bridge = bridge_block(self.spec, site, place, self.password(bridge_user(site.name)),
                              cloud_host=LOOPBACK, cloud_port=self.cloud.port)
        bridge = [b.replace("restart_timeout 1 30", "restart_timeout 1 2") for b in bridge]
        self.site = Mosquitto(self.workdir / "site-mq", extra_conf="\n".join(bridge) + "\n",
                              secure_dir=self.lay.broker_dir(site.name))
        self.site.start()

    def client_flags(self, user: str) -> list[str]:
        return ["--mqtt-username", user, "--mqtt-password-file",
                str(self.lay.client_dir(user) / "password"), "--mqtt-ca", str(self.ca)]

    def _start_ingest(self) -> None:
        assert self.sup and self.cloud and self.influx
        self.sup.python("ingest", "cloud.ingest", "--mqtt-port", str(self.cloud.port),
                        "--influx-url", self.influx.url, *self.client_flags("ingest"))

    def _wait_ready(self, timeout: float = 60.0) -> None:
        """Until ingestion has subscribed: gateway A republishes one event (idempotent: one
        point) until it is stored, which also shows TLS, logins, ACL and the bridge work."""
        from cloud.codec import cloud_event_id
        from cloud.influx import InfluxClient
        from cloud.store import Store
        from fiberwatch.bench._security_probe import connect, make_event

        assert self.site and self.influx
        user = gateway_user(SITE, GW_A)
        ev, store = make_event(SITE, GW_A, 0), Store(InfluxClient(self.influx.url))
        probe = connect(self.site.port, self.ca, user, self.password(user))
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                probe.publish(topics.events(SITE, GW_A), ev.to_json())
                try:
                    if store.anomaly(cloud_event_id(SITE, GW_A, ev.id)) is not None:
                        return
                except Exception:  # noqa: BLE001, S110 - the database is not created yet
                    pass
                time.sleep(0.5)
        finally:
            probe.close()
        raise RuntimeError(f"the deployment stored nothing in {timeout:.0f} s; logs in "
                           f"{self.workdir / 'logs'} (probe login: {probe.reason})")

    def _start_api(self) -> None:
        assert self.sup and self.influx
        self.tokens = {role: f"{role}-{secrets.token_urlsafe(24)}" for role in ("viewer", "admin")}
        path = self.workdir / "tokens.json"
        path.write_text(json.dumps({t: {"name": f"bench-{r}", "role": r}
                                    for r, t in self.tokens.items()}))
        port = free_port()
        self.api_url = f"http://{LOOPBACK}:{port}"
        self.sup.python("api", "fiberwatch", "cloud", "serve", "--port", str(port), "--influx",
                        self.influx.url, "--registry", str(self.workdir / "registry"),
                        "--tokens", str(path))

    def _start_agent(self) -> None:
        assert self.sup and self.site
        from federation.registry.keys import save_pair

        keys = self.workdir / "keys"
        if not (keys / "model.pub").exists():
            keys.mkdir(parents=True, exist_ok=True)
            save_pair(keys / "model.key", keys / "model.pub")
        user = gateway_user(SITE, GW_B)
        cfg = {
            "gateway": {"site": SITE, "id": GW_B, "data_dir": str(self.workdir / "agent")},
            "broker": {"host": LOOPBACK, "port": self.site.port, "tls": True,
                       "ca_file": str(self.ca), "username": user,
                       "source_username": raw_user(SITE, GW_B),
                       "password_file": str(self.lay.client_dir(user) / "password")},
            "streams": [{"kind": "dts", "channels": 8, "sample_rate_hz": 1.0, "window_s": 10.0,
                         "hop_s": 5.0}],
            "model": {"public_key": str(keys / "model.pub")},
            "uplink": {"health_interval_s": 1.0},
        }
        path = self.workdir / "agent.toml"
        path.write_text(tomli_w.dumps(cfg))
        self.sup.start("agent", [sys.executable, "-m", "fiberwatch", "edge", "run", "--config",
                                 str(path)])

    def restart_cloud_broker(self, down_s: float) -> None:
        """A WAN outage: the cloud broker is down for `down_s`, then back (same port, state)."""
        assert self.cloud is not None
        self.cloud.stop()
        time.sleep(down_s)
        self.cloud.start()
