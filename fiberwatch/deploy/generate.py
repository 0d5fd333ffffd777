"""Write a deployment's files for a site list (the `fiberwatch deploy` commands).

Output layout under ``OUT`` (every private key and secret 0600; re-running reuses what
exists, so adding a gateway changes nothing already installed)::

    ca/ca.crt, ca/ca.key            the CA (keep ca.key offline)
    cloud/                          install on the cloud broker as INSTALL_DIR
        mosquitto.conf passwd acl certs/{ca.crt,server.crt,server.key}
    site-S/                         install on site S's broker as INSTALL_DIR
        mosquitto.conf passwd acl certs/{ca.crt,server.crt,server.key,bridge.crt,bridge.key}
    clients/USER/                   install on the machine that logs in as USER
        password ca.crt client.crt client.key
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from fiberwatch.deploy import acl, broker_conf, passwd, pki
from fiberwatch.deploy.spec import (
    CLOUD_USERS,
    DeploySpec,
    Site,
    bridge_user,
    cloud_users,
    gateway_user,
    ingest_worker_users,
    interrogator_user,
    password_group,
    site_users,
)


@dataclass(frozen=True)
class Layout:
    out: Path

    @property
    def ca(self) -> pki.CertFiles:
        return pki.CertFiles(self.out / "ca" / "ca.crt", self.out / "ca" / "ca.key")

    def broker_dir(self, site: str | None) -> Path:
        return self.out / ("cloud" if site is None else f"site-{site}")

    def client_dir(self, user: str) -> Path:
        return self.out / "clients" / password_group(user)

    def password(self, user: str) -> str:
        return (self.client_dir(user) / "password").read_text().strip()


def client_groups(spec: DeploySpec) -> list[str]:
    """Every secret's owner: gateways, interrogators, bridges and the cloud services."""
    out = [*CLOUD_USERS, *ingest_worker_users(spec)]
    for s in spec.sites:
        out.append(bridge_user(s.name))
        for g in s.gateways:
            out += [gateway_user(s.name, g), interrogator_user(s.name, g)]
    return out


def write_certs(spec: DeploySpec, lay: Layout, *, extra_names: tuple[str, ...] = (),
                rotate: bool = False) -> None:
    """CA, one server certificate per broker, one client certificate per login group."""
    ca = pki.ensure_ca(lay.ca, rotate=rotate)
    brokers: list[tuple[str | None, str]] = [(None, spec.cloud_host)]
    brokers += [(s.name, s.host) for s in spec.sites]
    for site, host in brokers:
        certs = lay.broker_dir(site) / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca.cert, certs / "ca.crt")
        names = tuple(dict.fromkeys((host, *extra_names)))
        pki.ensure_issued(ca, pki.CertFiles(certs / "server.crt", certs / "server.key"),
                          f"{'cloud' if site is None else site} broker", server_names=names,
                          rotate=rotate)
        if site is not None:
            pki.ensure_issued(ca, pki.CertFiles(certs / "bridge.crt", certs / "bridge.key"),
                              bridge_user(site), rotate=rotate)
    for user in client_groups(spec):
        d = lay.client_dir(user)
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca.cert, d / "ca.crt")
        pki.ensure_issued(ca, pki.CertFiles(d / "client.crt", d / "client.key"), user,
                          rotate=rotate)


def write_creds(spec: DeploySpec, lay: Layout, *, rotate: bool = False) -> None:
    """A secret per login group (clients/USER/password) and each broker's password file."""
    for user in client_groups(spec):
        passwd.ensure_secret(lay.client_dir(user) / "password", rotate=rotate)
    for site in spec.sites:
        entries = {u: lay.password(u) for u in site_users(site)}
        passwd.write_private(lay.broker_dir(site.name) / "passwd", passwd.password_file(entries))
    entries = {u: lay.password(u) for u in cloud_users(spec)}
    passwd.write_private(lay.broker_dir(None) / "passwd", passwd.password_file(entries))


def write_acls(spec: DeploySpec, lay: Layout) -> None:
    for site in spec.sites:
        _write(lay.broker_dir(site.name) / "acl", acl.site_acl(site))
    _write(lay.broker_dir(None) / "acl", acl.cloud_acl(spec))


def write_broker_confs(spec: DeploySpec, lay: Layout, placement: broker_conf.Placement, *,
                       template: bool = False) -> None:
    """mosquitto.conf of every broker; `template` leaves the bridge password out."""
    from dataclasses import replace

    for site in spec.sites:
        p = replace(placement, port=site.port)
        pw = None if template else lay.password(bridge_user(site.name))
        text = broker_conf.site_conf(spec, site, p, pw)
        _write(lay.broker_dir(site.name) / "mosquitto.conf", text, private=not template)
    p = replace(placement, port=spec.cloud_port)
    _write(lay.broker_dir(None) / "mosquitto.conf", broker_conf.cloud_conf(spec, p))


def _write(path: Path, text: str, private: bool = False) -> None:
    if private:
        passwd.write_private(path, text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_single_broker(spec: DeploySpec, lay: Layout, *, server_names: tuple[str, ...],
                        client_certs: bool = False) -> Path:
    """An all-in-one broker folder (the demo): every site's logins and the cloud services',
    one server certificate for `server_names`; returns the folder (``single/``)."""
    ca = pki.ensure_ca(lay.ca)
    d = lay.out / "single"
    (d / "certs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca.cert, d / "certs" / "ca.crt")
    pki.ensure_issued(ca, pki.CertFiles(d / "certs" / "server.crt", d / "certs" / "server.key"),
                      "broker", server_names=server_names)
    for user in client_groups(spec):
        passwd.ensure_secret(lay.client_dir(user) / "password")
        if client_certs:
            pki.ensure_issued(ca, pki.CertFiles(lay.client_dir(user) / "client.crt",
                                                lay.client_dir(user) / "client.key"), user)
    users = [u for s in spec.sites for u in site_users(s)] + cloud_users(spec)
    passwd.write_private(d / "passwd", passwd.password_file({u: lay.password(u) for u in users}))
    _write(d / "acl", acl.single_acl(spec))
    return d


def write_all(spec: DeploySpec, lay: Layout, placement: broker_conf.Placement, *,
              extra_names: tuple[str, ...] = (), rotate: bool = False) -> None:
    write_certs(spec, lay, extra_names=extra_names, rotate=rotate)
    write_creds(spec, lay, rotate=rotate)
    write_acls(spec, lay)
    write_broker_confs(spec, lay, placement)


__all__ = ["Layout", "Site", "write_acls", "write_all", "write_broker_confs", "write_certs",
           "write_creds", "write_single_broker"]
