"""`fiberwatch deploy certs|creds|acl|broker|all`: a site's broker files from a site list.

Every command reads the site list (``--sites FILE``, see `fiberwatch.deploy.spec`) and writes
under ``--out DIR`` (layout: `fiberwatch.deploy.generate`). Existing keys and passwords are
kept unless ``--rotate``; the password file, ACL and configs are always rewritten from the list.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fiberwatch.cli import UsageError

ACTIONS = {
    "certs": "the CA, a server certificate per broker, a client certificate per login",
    "creds": "a password per login (clients/USER/password) and each broker's password file",
    "acl": "each broker's ACL (a gateway publishes and reads only its own topics)",
    "broker": "each broker's mosquitto.conf (the site brokers with their bridge to the cloud)",
    "all": "certs, creds, acl and broker, in that order",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("deploy", help="generate broker certificates, credentials, ACLs, configs")
    dsub = p.add_subparsers(dest="deploy_command", metavar="ACTION", required=True)
    for name, text in ACTIONS.items():
        a = dsub.add_parser(name, help=text, description=text)
        a.add_argument("--sites", type=Path, required=True, metavar="FILE",
                       help="the site list (TOML; example: deploy/mosquitto/sites.example.toml)")
        a.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
        if name in ("certs", "creds", "acl", "all"):
            _add_ingest_workers(a)
        if name in ("certs", "creds", "all"):
            a.add_argument("--rotate", action="store_true",
                           help="replace existing keys/passwords (clients must be updated)")
        if name in ("certs", "all"):
            a.add_argument("--server-name", action="append", default=[], metavar="NAME",
                           help="another DNS name or IP in every broker certificate")
        if name in ("broker", "all"):
            a.add_argument("--install-dir", type=Path, default=Path("/etc/mosquitto/fiberwatch"),
                           help="where a broker's folder is installed (default %(default)s)")
            a.add_argument("--persistence-dir", type=Path, default=Path("/var/lib/mosquitto"),
                           help="the brokers' persistence folder (default %(default)s)")
        if name == "broker":
            a.add_argument("--template", action="store_true",
                           help="leave the bridge password out (a placeholder): for sharing")
        a.set_defaults(func=_run)


def _add_ingest_workers(a: argparse.ArgumentParser) -> None:
    a.add_argument("--ingest-workers", type=int, metavar="N",
                   help="logins ingest-f1 .. ingest-fN for `fiberwatch cloud ingest --workers N "
                        "--worker-logins` (default: the site list's cloud.ingest_workers, 0)")


def _run(args: argparse.Namespace) -> int:
    from fiberwatch.deploy import generate
    from fiberwatch.deploy.broker_conf import Placement
    from fiberwatch.deploy.spec import SpecError, load_spec, with_ingest_workers

    try:
        spec = with_ingest_workers(load_spec(args.sites), getattr(args, "ingest_workers", None))
    except SpecError as exc:
        raise UsageError(str(exc)) from None
    lay = generate.Layout(args.out)
    action = args.deploy_command
    rotate = getattr(args, "rotate", False)
    try:
        if action in ("certs", "all"):
            generate.write_certs(spec, lay, extra_names=tuple(args.server_name), rotate=rotate)
        if action in ("creds", "all"):
            generate.write_creds(spec, lay, rotate=rotate)
        if action in ("acl", "all"):
            generate.write_acls(spec, lay)
        if action in ("broker", "all"):
            place = Placement(install_dir=args.install_dir, persistence_dir=args.persistence_dir)
            generate.write_broker_confs(spec, lay, place,
                                        template=getattr(args, "template", False))
    except FileNotFoundError as exc:
        raise UsageError(f"{exc.filename}: missing; run 'fiberwatch deploy creds' first") from None
    except OSError as exc:
        raise UsageError(str(exc)) from None
    print(f"fiberwatch deploy {action}: wrote {args.out} for {len(spec.sites)} site(s), "
          f"{spec.gateway_count()} gateway(s)")
    if action in ("creds", "all"):
        print(service_logins(lay))
    return 0


def service_logins(lay: Any) -> str:
    """Where the cloud services' passwords go for their systemd units (docs/deploy.md);
    ``lay``: the `fiberwatch.deploy.generate.Layout` written."""
    from fiberwatch.deploy.spec import SERVICE_UNITS

    lines = ["cloud service logins for the units in deploy/systemd/ (docs/deploy.md):"]
    lines += [f"  {lay.client_dir(user) / 'password'} -> /etc/fiberwatch/mqtt/{user}.password"
              f" ({unit})" for user, unit in SERVICE_UNITS.items()]
    return "\n".join(lines)
