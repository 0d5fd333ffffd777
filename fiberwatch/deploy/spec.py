"""The site list the generators work from, and the MQTT usernames it implies.

A TOML file::

    [cloud]
    host = "mqtt.cloud.example.com"   # name in the cloud broker's certificate, bridge target
    port = 8883

    [[site]]
    name = "demo"
    host = "broker.demo.example.com"  # name in the site broker's certificate
    gateways = ["well-a", "well-b", "pipeline-1"]

Usernames (the broker uses them as client ids, so each connection has its own):
``{site}.{gateway}`` for a gateway's uplink, ``{site}.{gateway}.raw`` for its raw-frame
subscription (same password), ``{site}.{gateway}.interrogator`` for the interrogator that
publishes its frames, ``bridge.{site}`` for a site's bridge on the cloud broker, and the cloud
services ``ingest``, ``rollout``, ``viewer``, ``alerting`` and ``labels`` (publishes operator
labels). With ``[cloud] ingest_workers = N`` (or ``fiberwatch deploy ... --ingest-workers N``)
also ``ingest-f1`` ... ``ingest-fN``: one login per feature worker of ``fiberwatch cloud ingest
--workers N --worker-logins`` (the broker takes logins as client ids, so each connection needs
its own; `ingest_worker_user`).
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from cloud.ingest.workers import worker_login
from edge_agent.topics import check_name

CLOUD_USERS = ("ingest", "rollout", "viewer", "alerting", "labels")
#: cloud logins that a shipped systemd unit (deploy/systemd/) runs as: login -> unit. Each unit
#: reads its password as the credential /etc/fiberwatch/mqtt/LOGIN.password
#: (`fiberwatch deploy creds` names them)
SERVICE_UNITS = {"alerting": "fiberwatch-alerting.service",
                 "labels": "fiberwatch-labels.service"}
MAX_INGEST_WORKERS = 64


class SpecError(ValueError):
    """The site list is unusable; the message names the file and the field."""


@dataclass(frozen=True)
class Site:
    name: str
    host: str
    gateways: tuple[str, ...]
    port: int = 8883


@dataclass(frozen=True)
class Sizing:
    """What the broker limits are sized for (see `broker_conf`)."""

    health_interval_s: float = 5.0
    events_per_gateway_day: int = 5000
    max_packet_size: int = 16 << 20

    def __post_init__(self) -> None:
        if not self.health_interval_s > 0:
            raise ValueError(f"sizing.health_interval_s must be > 0, got {self.health_interval_s}")
        if self.events_per_gateway_day < 0:
            raise ValueError("sizing.events_per_gateway_day must be >= 0")
        if not 1 << 16 <= self.max_packet_size <= 256 << 20:
            raise ValueError("sizing.max_packet_size must be between 64 KiB and 256 MiB")


@dataclass(frozen=True)
class DeploySpec:
    cloud_host: str
    sites: tuple[Site, ...]
    cloud_port: int = 8883
    sizing: Sizing = field(default_factory=Sizing)
    ingest_workers: int = 0  # feature workers with logins of their own (`ingest_worker_user`)

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        raise SpecError(f"no site {name!r} in the site list")

    def gateway_count(self) -> int:
        return sum(len(s.gateways) for s in self.sites)


def gateway_user(site: str, gateway: str) -> str:
    return f"{site}.{gateway}"


def raw_user(site: str, gateway: str) -> str:
    return f"{site}.{gateway}.raw"


def interrogator_user(site: str, gateway: str) -> str:
    return f"{site}.{gateway}.interrogator"


def bridge_user(site: str) -> str:
    return f"bridge.{site}"


def site_users(site: Site) -> list[str]:
    """Every login of the site broker, in a stable order."""
    out = []
    for g in site.gateways:
        out += [gateway_user(site.name, g), raw_user(site.name, g),
                interrogator_user(site.name, g)]
    return out


def ingest_worker_user(k: int, base: str = "ingest") -> str:
    """The login of feature worker `k` (1, 2, ...) of the ingestion that logs in as `base`
    (the name `fiberwatch cloud ingest --worker-logins` looks for)."""
    return worker_login(base, k)


def ingest_worker_users(spec: DeploySpec) -> list[str]:
    return [ingest_worker_user(k) for k in range(1, spec.ingest_workers + 1)]


def with_ingest_workers(spec: DeploySpec, n: int | None) -> DeploySpec:
    """`spec` with `n` feature-worker logins (None: as the site list says)."""
    if n is None:
        return spec
    if not 0 <= n <= MAX_INGEST_WORKERS:
        raise SpecError(f"ingest workers must be 0..{MAX_INGEST_WORKERS}, got {n}")
    return replace(spec, ingest_workers=n)


def cloud_users(spec: DeploySpec) -> list[str]:
    return [*CLOUD_USERS, *ingest_worker_users(spec), *(bridge_user(s.name) for s in spec.sites)]


def password_group(user: str) -> str:
    """Logins that share one secret: a gateway's uplink and its raw-frame subscription."""
    return user[: -len(".raw")] if user.endswith(".raw") else user


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def load_spec(path: Path) -> DeploySpec:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"{path}: {exc}") from None
    try:
        return parse_spec(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"{path}: {exc}") from None


def parse_spec(data: dict) -> DeploySpec:
    cloud = data.get("cloud") or {}
    sites = []
    for i, s in enumerate(data.get("site") or []):
        where = f"site.{i}"
        name = check_name(str(s["name"]), f"{where}.name")
        gws = tuple(check_name(str(g), f"{where}.gateways") for g in s["gateways"])
        if not gws:
            raise ValueError(f"{where}.gateways: at least one gateway")
        sites.append(Site(name, str(s.get("host", "127.0.0.1")), gws,
                          _port(s.get("port", 8883), f"{where}.port")))
    if not sites:
        raise ValueError("site: at least one [[site]] table")
    sizing = Sizing(**(data.get("sizing") or {}))
    spec = DeploySpec(str(cloud.get("host", "127.0.0.1")), tuple(sites),
                      _port(cloud.get("port", 8883), "cloud.port"), sizing,
                      _ingest_workers(cloud.get("ingest_workers", 0)))
    _check_unique(spec)
    return spec


def _ingest_workers(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not (
            0 <= value <= MAX_INGEST_WORKERS):
        raise ValueError(f"cloud.ingest_workers: {value!r} is not 0..{MAX_INGEST_WORKERS}")
    return value


def _port(value: object, where: str) -> int:
    if not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{where}: {value!r} is not a TCP port")
    return value


def _check_unique(spec: DeploySpec) -> None:
    seen: set[str] = set()
    names = [s.name for s in spec.sites]
    if len(set(names)) != len(names):
        raise ValueError("site.name: site names must be unique")
    for user in [u for s in spec.sites for u in site_users(s)] + cloud_users(spec):
        if user in seen:
            raise ValueError(f"username {user!r} would be used twice: rename a gateway")
        seen.add(user)
