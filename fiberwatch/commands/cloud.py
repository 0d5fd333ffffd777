"""`fiberwatch cloud serve|ingest`: the cloud API, its OpenAPI docs and the dashboard (uvicorn).

Flags override the ``FIBERWATCH_CLOUD_*`` environment (see `cloud.settings.CloudSettings`).
Ctrl-C or SIGTERM stops the server cleanly: uvicorn finishes open requests and runs the
lifespan's shutdown, then re-raises the signal: exit status 130 after Ctrl-C (as for every
``fiberwatch`` command), terminated by SIGTERM after SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fiberwatch.cli import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cloud", help="the cloud API and dashboard")
    csub = p.add_subparsers(dest="cloud_command", metavar="ACTION", required=True)
    s = csub.add_parser("serve", help="serve the API (/api/v1, /docs) and the dashboard (/)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    s.add_argument("--influx", metavar="URL", help="InfluxDB URL (default http://127.0.0.1:8086)")
    s.add_argument("--db", help="InfluxDB database (default fiberwatch)")
    s.add_argument("--registry", type=Path, metavar="DIR", help="model registry directory")
    s.add_argument("--model-public-key", type=Path, metavar="PUB",
                   help="Ed25519 key that verifies packages before a promotion")
    s.add_argument("--tokens", type=Path, metavar="FILE",
                   help="API tokens, TOML or JSON: token -> {name, role}")
    s.add_argument("--alerting", type=Path, metavar="FILE",
                   help="alerting TOML: /api/v1/alerts lists, acknowledges and resolves its alerts")
    s.add_argument("--insecure-dev", action="store_true",
                   help="accept weak or missing tokens (a dev admin token); loopback only")
    s.add_argument("--sample-data", action="store_true",
                   help="serve built-in synthetic data from memory instead of InfluxDB")
    s.set_defaults(func=_serve)
    i = csub.add_parser("ingest", add_help=False,
                        help="MQTT -> InfluxDB ingestion (see 'fiberwatch cloud ingest --help')")
    i.set_defaults(func=None)  # fiberwatch.cli hands the rest of argv to cloud.ingest
    a = csub.add_parser("alerting", add_help=False,
                        help="stored events -> alert webhooks and MQTT "
                             "(see 'fiberwatch cloud alerting --help')")
    a.set_defaults(func=None)  # fiberwatch.cli hands the rest of argv to cloud.alerting
    lb = csub.add_parser("labels", add_help=False,
                         help="operator labels -> their gateways over MQTT "
                              "(see 'fiberwatch cloud labels --help')")
    lb.set_defaults(func=None)  # fiberwatch.cli hands the rest of argv to cloud.labels


def _settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from cloud.settings import CloudSettings

    flags = {"influx_url": args.influx, "influx_db": args.db, "registry_dir": args.registry,
             "model_public_key": args.model_public_key,
             "tokens_file": args.tokens, "alerting_config": args.alerting,
             "insecure_dev": args.insecure_dev or None, "bind_host": args.host}
    try:
        return CloudSettings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UsageError(f"{where + ': ' if where else ''}{first['msg']}") from None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cloud.main import create_app
    from cloud.settings import DEV_TOKEN

    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} is not a TCP port")
    settings = _settings(args)
    store = registry = None
    if args.sample_data:
        from cloud.api.sample import sample_registry, sample_store

        store, registry = sample_store(), sample_registry()
    app = create_app(settings, store=store, registry=registry)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                            access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    url = f"http://{args.host}:{args.port}/"
    dev = f"#token={DEV_TOKEN}" if settings.principal_for(DEV_TOKEN) else ""
    print(f"fiberwatch cloud: dashboard {url}{dev}  API docs {url}docs  (Ctrl-C stops)",
          file=sys.stderr, flush=True)
    server.run()
    if not server.started:
        raise UsageError(f"could not serve on {args.host}:{args.port} (see the log above)")
    return 0
