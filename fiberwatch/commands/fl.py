"""`fiberwatch fl server|node|run|keys`: the Flower deployment, cloud side and gateway side.

``server`` runs a SuperLink (and, with ``--broker``, the canary rollout of new registry
candidates) until Ctrl-C; ``node`` runs one gateway's SuperNode and its ClientApp worker;
``run`` starts a federated run on a SuperLink and prints one line per round; ``keys``
makes a SuperNode authentication key pair. TLS and SuperNode authentication are the
default: a TLS SuperLink admits only registered node keys (``--register-node``), and a node
needs its private key (``--auth-key`` or ``federation.auth_key``). Plain HTTP (``--insecure``,
no node authentication) is refused unless the SuperLink address is loopback.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from edge_agent.mqtt_args import add_broker_args
from fiberwatch.cli import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fl", help="federated learning: SuperLink, gateway SuperNode, runs")
    fl = p.add_subparsers(dest="fl_command", metavar="ACTION", required=True)

    _add_server(fl)

    n = fl.add_parser("node", help="run a gateway's SuperNode and ClientApp until Ctrl-C")
    n.add_argument("--config", type=Path, help="gateway config (superlink, buffer, TLS)")
    n.add_argument("--stream", default="das", choices=("das", "dts"))
    n.add_argument("--superlink", metavar="HOST:PORT", help="overrides the config")
    n.add_argument("--gateway-id", help="site/gateway (default: from --config)")
    n.add_argument("--normal-buffer", type=Path, help="overrides the config's buffer path")
    n.add_argument("--labels", type=Path,
                   help="the gateway's operator labels (default with --config: its labels.db)")
    n.add_argument("--workdir", type=Path, help="logs (default: a temp dir)")
    n.add_argument("--insecure", action="store_true", help="plain HTTP to the SuperLink")
    n.add_argument("--root-certificates", type=Path, metavar="CA")
    n.add_argument("--auth-key", type=Path, metavar="PRIVATE", help="SuperNode auth key")
    n.set_defaults(func=_node)

    r = fl.add_parser("run", help="start a federated run and follow it round by round")
    r.add_argument("--superlink", default="127.0.0.1:9092", metavar="HOST:PORT")
    r.add_argument("--insecure", action="store_true")
    r.add_argument("--root-certificates", type=Path, metavar="CA")
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--strategy", default="fedavg",
                   choices=("fedavg", "fedprox", "trimmed-mean", "median", "krum"))
    r.add_argument("--codec", default="int8", choices=("fp32", "fp16", "int8",
                                                               "int8-channel"))
    r.add_argument("--min-nodes", type=int, default=2)
    r.add_argument("--results-dir", type=Path, help="default: a temp dir (printed)")
    r.add_argument("--influx-url", default="")
    r.add_argument("--registry", type=Path, help="package the result as a candidate here")
    r.add_argument("--signing-key", type=Path, help="Ed25519 key that signs the package")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other run-config key (federation/flower/flwr_app/pyproject.toml)")
    r.add_argument("--timeout", type=float, default=3600.0)
    r.add_argument("--init-weights", type=Path, metavar="NPZ",
                   help="a label round: continue from this model (a previous run's "
                        "final_weights.npz) with the gateways' operator labels "
                        "(`fiberwatch.label_round`; its epochs/lr/label-share unless --set)")
    r.set_defaults(func=_run)

    k = fl.add_parser("keys", help="make a SuperNode authentication key pair (ECDSA P-384)")
    k.add_argument("private", type=Path)
    k.add_argument("public", type=Path)
    k.set_defaults(func=_keys)


def _add_server(fl: argparse._SubParsersAction) -> None:
    s = fl.add_parser("server", help="run a SuperLink (and the canary rollout) until Ctrl-C")
    s.add_argument("--workdir", type=Path, required=True, help="Flower state and logs")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9092)
    _tls_server_args(s)
    s.add_argument("--node-auth", action="store_true",
                   help="only registered SuperNodes (always on with TLS; kept for scripts)")
    s.add_argument("--register-node", type=Path, action="append", default=[],
                   metavar="PUBKEY", help="allow this SuperNode public key (repeatable)")
    s.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker: enables the rollout")
    add_broker_args(s)  # the rollout's login and TLS
    s.add_argument("--registry", type=Path, help="model registry root (rollout)")
    s.add_argument("--canary", action="append", default=[], metavar="SITE/GATEWAY",
                   help="canary gateway (repeatable; required with --broker)")
    s.add_argument("--gateway", action="append", default=[], metavar="SITE/GATEWAY",
                   help="a gateway to promote to (others are found by their health)")
    s.add_argument("--canary-window", type=float, default=600.0, metavar="S")
    s.add_argument("--public-key", type=Path, metavar="PUB",
                   help="Ed25519 key the rollout verifies packages with (required with --broker)")
    s.add_argument("--signing-key", type=Path, metavar="PRIVATE",
                   help="Ed25519 key that re-signs production weights for a rollback")
    s.set_defaults(func=_server)


def _tls_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure", action="store_true", help="plain HTTP (loopback tests only)")
    p.add_argument("--ssl-ca", type=Path, metavar="CA")
    p.add_argument("--ssl-cert", type=Path, metavar="CERT")
    p.add_argument("--ssl-key", type=Path, metavar="KEY")


def _fail(exc: Exception) -> UsageError:
    return UsageError(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))


def _wait_for_ctrl_c() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _server(args: argparse.Namespace) -> int:
    from federation.flower.deployment import SuperLink, Tls
    from federation.processes import ProcessError

    tls = None
    if not args.insecure:
        if not (args.ssl_ca and args.ssl_cert and args.ssl_key):
            raise UsageError("TLS needs --ssl-ca, --ssl-cert and --ssl-key (or --insecure on "
                             "loopback)")
        tls = Tls(args.ssl_ca, args.ssl_cert, args.ssl_key)
    elif args.node_auth or args.register_node:
        raise UsageError("--node-auth/--register-node need TLS (drop --insecure)")
    if args.broker and (not args.registry or not args.canary or not args.public_key):
        raise UsageError("--broker needs --registry, --public-key and at least one --canary")
    try:
        link = SuperLink(args.workdir, host=args.host, port=args.port, insecure=args.insecure,
                         tls=tls, node_auth=not args.insecure)
        link.start()
    except (ProcessError, OSError) as exc:
        raise _fail(exc) from None
    service = None
    try:
        for key in args.register_node:
            link.control.register_node(key)
        mode = "INSECURE plain HTTP, loopback only" if args.insecure else \
            f"TLS, node authentication, {len(args.register_node)} node key(s) registered"
        print(f"SuperLink listening on {link.address} ({mode}; logs: {link.group.log_path})",
              flush=True)
        if args.broker:
            service = _start_rollout(args)
        _wait_for_ctrl_c()
    except (ProcessError, ValueError) as exc:
        raise _fail(exc) from None
    finally:
        if service is not None:
            service.stop()
        link.stop()
    return 0


def _start_rollout(args: argparse.Namespace) -> Any:
    """The started `RolloutService` (the caller stops it)."""
    from edge_agent.mqtt_client import broker_from_args
    from federation.registry.keys import load_private, load_public
    from federation.registry.rollout import Policy, RolloutService
    from federation.registry.store import Registry

    host, _, port = args.broker.rpartition(":")
    policy = Policy(canary=tuple(args.canary), window_s=args.canary_window)
    registry = Registry(args.registry, public_key=load_public(args.public_key))
    signing = load_private(args.signing_key) if args.signing_key else None
    try:  # a bad address, a missing password or TLS file fails here, not later
        broker = broker_from_args(args, host or "127.0.0.1", int(port))
        service = RolloutService(registry, policy, broker.host, broker.port,
                                 gateways=args.gateway, broker=broker, signing_key=signing)
    except ValueError as exc:  # MqttConfigError is one
        raise UsageError(f"--broker: {exc}") from None
    service.start()
    print(f"rollout: canary {', '.join(args.canary)} via {args.broker}", flush=True)
    return service


def _node(args: argparse.Namespace) -> int:
    from federation.flower.deployment import GatewayNode
    from federation.processes import ProcessError

    superlink, gw_id, buffer, insecure, ca, auth = (args.superlink, args.gateway_id,
                                                    args.normal_buffer, args.insecure,
                                                    args.root_certificates, args.auth_key)
    labels: Path | None = args.labels
    if args.config:
        from edge_agent.config import ConfigError, load_gateway_config

        try:
            cfg = load_gateway_config(args.config)
        except ConfigError as exc:
            raise _fail(exc) from None
        fed = cfg.federation
        superlink = superlink or fed.superlink
        gw_id = gw_id or f"{cfg.gateway.site}/{cfg.gateway.id}"
        buffer = buffer or cfg.gateway.data_dir / f"normal-{args.stream}.fwnb"
        labels = labels or cfg.gateway.data_dir / "labels.db"
        insecure = insecure or fed.insecure
        ca = ca or fed.root_certificates
        auth = auth or fed.auth_key
    if not (superlink and buffer):
        raise UsageError("give --config, or --superlink and --normal-buffer")
    if not insecure and (ca is None or auth is None):
        raise UsageError("TLS needs --root-certificates and the node's --auth-key (or "
                         "federation.root_certificates/auth_key; --insecure on loopback only)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fiberwatch-node-"))
    try:
        node = GatewayNode(workdir, superlink, insecure=insecure, root_certificates=ca,
                           auth_private_key=None if insecure else auth,
                           node_config={"gateway-id": gw_id or "gateway",
                                        "normal-buffer": str(Path(buffer).resolve()),
                                        **({"labels": str(Path(labels).resolve())}
                                           if labels else {})})
    except ProcessError as exc:
        raise _fail(exc) from None
    try:
        node.start()
        print(f"SuperNode for {gw_id} connected to {superlink} (logs: {node.group.log_path})",
              flush=True)
        _wait_for_ctrl_c()
    except ProcessError as exc:
        raise _fail(exc) from None
    finally:
        node.stop()
    return 0


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _run(args: argparse.Namespace) -> int:
    from federation.flower.deployment import Control
    from federation.processes import ProcessError

    if not args.insecure and args.root_certificates is None:
        raise UsageError("TLS needs --root-certificates (or --insecure on loopback)")
    results = args.results_dir or Path(tempfile.mkdtemp(prefix="fiberwatch-fl-run-"))
    results.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {"num-rounds": args.rounds, "strategy": args.strategy,
                           "codec": args.codec, "min-nodes": args.min_nodes,
                           "results-dir": str(results.resolve()), "influx-url": args.influx_url}
    if args.registry:
        cfg["registry-dir"] = str(args.registry.resolve())
    if args.signing_key:
        cfg["signing-key"] = str(args.signing_key.resolve())
    if args.init_weights:
        from fiberwatch.label_round import LABEL_ROUND

        cfg.update({**LABEL_ROUND, "init-weights": str(args.init_weights.resolve())})
    cfg.update(_parse_set(args.set))
    try:
        control = Control(Path(tempfile.mkdtemp(prefix="fiberwatch-flwr-")), args.superlink,
                          insecure=args.insecure, root_certificates=args.root_certificates)
        run_id = control.submit(cfg)
        print(f"run {run_id} started; results in {results}", flush=True)
        summary = control.follow(run_id, results, timeout_s=args.timeout,
                                 on_round=lambda r: print(_round_line(r, args.rounds),
                                                          flush=True))
    except (ProcessError, OSError) as exc:
        raise _fail(exc) from None
    extra = f", candidate {summary['version']}" if summary.get("version") else ""
    auc = f", AUC {summary['auc']:.4f}" if summary.get("auc") is not None else ""
    print(f"run {run_id} done: held-out loss {summary.get('eval_loss', float('nan')):.4f}"
          f"{auc}{extra}")
    if summary.get("labels"):
        lb = summary["labels"]
        print(f"labels: held-back false-alarm windows flagged {lb['fa_before']} -> "
              f"{lb['fa_after']} of {lb['fa_windows']}; " + "; ".join(
                  f"{k[7:-8]} recall windows {lb[k[:-8] + '_before']} -> "
                  f"{lb[k[:-8] + '_after']} of {lb[k]}"
                  for k in sorted(lb) if k.startswith("recall_") and k.endswith("_windows")))
    return 0


def _round_line(r: dict[str, Any], total: int) -> str:
    auc = f", AUC {r['auc']:.4f}" if r.get("auc") is not None else ""
    ratio = r["bytes_up"] / r["bytes_up_fp32"] if r.get("bytes_up_fp32") else float("nan")
    return (f"round {r['round']}/{total}: {r['participants']} clients, {r['failures']} failed, "
            f"loss {r['loss']:.4f}{auc}, up {r['bytes_up']} B/client ({ratio:.0%} of fp32), "
            f"{r['duration_s']:.2f} s")


def _keys(args: argparse.Namespace) -> int:
    from federation.flower.deployment import generate_node_keys

    if args.private.exists():
        raise UsageError(f"{args.private} exists (refusing to overwrite a key)")
    generate_node_keys(args.private, args.public)
    print(f"wrote {args.private} (keep on the gateway) and {args.public} (register on the "
          "SuperLink: fiberwatch fl server --node-auth --register-node PUBKEY)")
    return 0
