"""Mosquitto configs for a site broker (with its bridge to the cloud) and the cloud broker.

Both: a TLS listener only, no anonymous logins, the password file and ACL of `passwd` and
`acl`, client id = username (``use_username_as_clientid``: nobody can take another login's
session), persistence on, a packet size cap and a per-client queue sized for a day of
QoS1 messages (see `queue_limit`). The site broker's bridge forwards every gateway's
uplink topics to the cloud at QoS1 and brings model topics back, with a persistent session
(``cleansession false``) so messages published during a WAN outage wait on the site broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_agent.topics import ROOT
from fiberwatch.deploy.acl import DOWNLINK, LABELS, UPLINK
from fiberwatch.deploy.spec import DeploySpec, Site, Sizing, bridge_user

HEADER = ("# Written by `fiberwatch deploy broker` (docs/deploy.md). Do not edit by hand:\n"
          "# change the site list and run the generator again.\n")
SECRET_PLACEHOLDER = "@BRIDGE_PASSWORD@"  # noqa: S105 - a placeholder


@dataclass(frozen=True)
class Placement:
    """Where the broker finds its files and listens."""

    install_dir: Path = Path("/etc/mosquitto/fiberwatch")
    persistence_dir: Path = Path("/var/lib/mosquitto")
    port: int = 8883
    bind: str | None = None  # None: every interface
    run_as_root: bool = False  # a temp broker started by root (tests, demo)
    log_dest: str = "syslog"
    autosave_s: int = 30


def queue_limit(sizing: Sizing, gateways: int) -> int:
    """QoS1 messages one offline client (the bridge, ingestion) may have queued: a day of
    health beats plus the event budget, for every gateway behind it, rounded up."""
    per_day = int(86400 / sizing.health_interval_s) + sizing.events_per_gateway_day + 100
    total = max(1, gateways) * per_day
    return -(-total // 10000) * 10000


def common_lines(p: Placement, sizing: Sizing, queued: int) -> list[str]:
    d = p.install_dir
    lines = [
        "per_listener_settings false",
        f"listener {p.port}" + (f" {p.bind}" if p.bind else ""),
        f"cafile {d}/certs/ca.crt",
        f"certfile {d}/certs/server.crt",
        f"keyfile {d}/certs/server.key",
        "tls_version tlsv1.2",
        "require_certificate false",
        "",
        "allow_anonymous false",
        f"password_file {d}/passwd",
        f"acl_file {d}/acl",
        "use_username_as_clientid true",
        "",
        "persistence true",
        f"persistence_location {p.persistence_dir}/",
        f"autosave_interval {p.autosave_s}",
        f"max_packet_size {sizing.max_packet_size}",
        f"# a day of QoS1 messages per offline client (health every "
        f"{sizing.health_interval_s:g} s + {sizing.events_per_gateway_day} events per gateway)",
        f"max_queued_messages {queued}",
        "max_inflight_messages 2000",  # ingestion's Receive Maximum: four batches of 500
        "set_tcp_nodelay true",
        f"log_dest {p.log_dest}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
    ]
    if p.run_as_root:
        lines.append("user root")
    return lines


def bridge_block(spec: DeploySpec, site: Site, p: Placement, password: str | None,
                 cloud_host: str | None = None, cloud_port: int | None = None) -> list[str]:
    """The site -> cloud ``connection`` block; `password` None writes a placeholder."""
    d = p.install_dir
    user = bridge_user(site.name)
    topics = ([f"topic {ROOT}/{site.name}/+/{t} out 1" for t in UPLINK]
              + [f"topic {ROOT}/{site.name}/+/{t} in 1" for t in DOWNLINK + LABELS])
    return [
        f"connection cloud-{site.name}",
        f"address {cloud_host or spec.cloud_host}:{cloud_port or spec.cloud_port}",
        f"bridge_cafile {d}/certs/ca.crt",
        f"bridge_certfile {d}/certs/bridge.crt",
        f"bridge_keyfile {d}/certs/bridge.key",
        "bridge_insecure false",
        "bridge_protocol_version mqttv311",
        f"remote_clientid {user}",
        f"remote_username {user}",
        f"remote_password {password if password is not None else SECRET_PLACEHOLDER}",
        "cleansession false",
        "notifications true",
        "notifications_local_only true",
        "keepalive_interval 30",
        "restart_timeout 1 30",
        "start_type automatic",
        *topics,
    ]


def site_conf(spec: DeploySpec, site: Site, p: Placement, bridge_password: str | None,
              **bridge_to: object) -> str:
    queued = queue_limit(spec.sizing, len(site.gateways))
    return (HEADER + f"# Site broker of site {site.name}.\n\n"
            + "\n".join(common_lines(p, spec.sizing, queued)) + "\n\n"
            + "# The bridge to the cloud broker (its password: clients/"
            + f"{bridge_user(site.name)}/password)\n"
            + "\n".join(bridge_block(spec, site, p, bridge_password, **bridge_to)) + "\n")  # type: ignore[arg-type]


def cloud_conf(spec: DeploySpec, p: Placement) -> str:
    queued = queue_limit(spec.sizing, spec.gateway_count())
    return (HEADER + "# Cloud broker: one bridge per site, ingestion, rollout.\n\n"
            + "\n".join(common_lines(p, spec.sizing, queued)) + "\n")


def single_conf(spec: DeploySpec, p: Placement) -> str:
    """An all-in-one broker (the demo): no bridge."""
    queued = queue_limit(spec.sizing, spec.gateway_count())
    lines = common_lines(p, spec.sizing, queued)
    return HEADER + "# All-in-one broker.\n\n" + "\n".join(lines) + "\n"
