"""Launch and stop the Flower Deployment Engine: a SuperLink, gateway SuperNodes, `flwr run`.

Each launcher starts its processes in a new process group of their own, remembers the
PIDs, waits until they answer (polling with a deadline) and stops exactly that group: SIGTERM,
then SIGKILL after a timeout. Flower's state lives in a private ``FLWR_HOME`` under
``workdir``; telemetry and update checks are off (`flwr_env`). TLS is the default: plain HTTP
needs ``insecure=True`` and is refused (`DeploymentError`) unless the SuperLink address is a
loopback one (the tests' and the demo's single-machine runs); SuperNode authentication is
enabled on the SuperLink with ``node_auth=True`` (then each node's public key must be
registered, `Control.register_node`, and the node started with its private key).
`local_tls` makes a CA and a loopback server certificate for single-machine runs.

A `GatewayNode` is two processes in one group (`federation.flower.node_runtime`): the SuperNode with
``--isolation process`` and a capped poll, and a long-lived ClientApp worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from federation.processes import LOOPBACK, ProcessError, ProcessGroup, free_port, listening

APP_DIR = Path(__file__).parent / "flwr_app"
CONNECTION = "fiberwatch"


class DeploymentError(ProcessError):
    """A Flower process did not start, or `flwr` refused a command (message says why)."""


def check_insecure(address: str, insecure: bool) -> None:
    """`DeploymentError` if plain HTTP is asked for a SuperLink that is not on loopback."""
    from edge_agent.config import is_loopback_host, split_host_port

    host = split_host_port(address)[0]
    if insecure and not is_loopback_host(host):
        raise DeploymentError(f"insecure (plain HTTP) is accepted only on loopback, not "
                              f"{host!r}: use TLS (a CA certificate) and node authentication")


def _script(name: str) -> str:
    """A console script of the running interpreter's environment (flwr's entry points)."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def flwr_env(flwr_home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0",
                "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.5",
                **extra})
    return env


@dataclass(frozen=True)
class Tls:
    """Certificates: ``ca`` verifies the SuperLink; ``cert``/``key`` are the SuperLink's."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


class _Launcher:
    group: ProcessGroup

    def start(self, timeout: float = 120.0) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.group.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Control:
    """The ``flwr`` CLI against one SuperLink (its own ``FLWR_HOME`` with one connection)."""

    def __init__(self, flwr_home: Path, address: str, *, insecure: bool = False,
                 root_certificates: Path | None = None) -> None:
        if not insecure and root_certificates is None:
            raise DeploymentError("the flwr CLI needs the SuperLink's CA certificate unless "
                                  "insecure=True")
        check_insecure(address, insecure)
        self.flwr_home, self.address = Path(flwr_home), address
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        lines = ["[superlink]", f'default = "{CONNECTION}"', f"[superlink.{CONNECTION}]",
                 f'address = "{address}"', f"insecure = {str(insecure).lower()}"]
        if root_certificates is not None and not insecure:
            lines.append(f'root-certificates = "{Path(root_certificates).resolve()}"')
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")

    def flwr(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``flwr ARGS``; its stdout (DeploymentError with flwr's last line on error)."""
        r = subprocess.run([_script("flwr"), *args], capture_output=True, text=True,
                           env=flwr_env(self.flwr_home), cwd=self.flwr_home, timeout=timeout,
                           check=False)
        if r.returncode != 0:
            msg = (r.stderr.strip() or r.stdout.strip()).splitlines()
            raise DeploymentError(f"flwr {args[0]}: {msg[-1] if msg else r.returncode}")
        return r.stdout

    def register_node(self, public_key: Path) -> None:
        """Allow a SuperNode's ECDSA key (node authentication): ``flwr supernode register``."""
        self.flwr("supernode", "register", str(public_key), CONNECTION)

    def submit(self, run_config: dict[str, Any], app_dir: Path = APP_DIR) -> int:
        """``flwr run``: start the ServerApp with ``run_config`` overrides; the run id."""
        cfg = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        args = ["run", str(app_dir), CONNECTION, "--format", "json"]
        out = self.flwr(*args, *(["--run-config", cfg] if cfg else []))
        try:
            res = json.loads(out)
        except ValueError as exc:
            raise DeploymentError(f"flwr run: unexpected output {out[-300:]!r}") from exc
        if not res.get("success") or "run-id" not in res:
            why = " ".join(x.strip() for x in str(res.get("error-message", "")).splitlines()
                           if x.strip() and not x.startswith("Using SuperLink"))
            raise DeploymentError(f"flwr run: {why[:300] or 'failed'}")
        return int(res["run-id"])

    def run_info(self, run_id: int) -> dict[str, Any]:
        """``flwr ls --run-id``: status (``finished:completed`` ...), details, traffic."""
        out = json.loads(self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json"))
        runs = out.get("runs") or []
        return dict(runs[0]) if runs else {}

    def follow(self, run_id: int, results_dir: Path, *, on_round: Any = None,
               timeout_s: float = 1800.0, poll_s: float = 0.25) -> dict[str, Any]:
        """Wait for run ``run_id``: ``on_round(dict)`` for each line the ServerApp appends to
        ``results_dir/rounds.jsonl``; returns ``summary.json`` (DeploymentError if the run
        fails or times out, with Flower's reason)."""
        rounds_file = Path(results_dir) / "rounds.jsonl"
        summary = Path(results_dir) / "summary.json"
        seen, deadline, next_status = 0, time.monotonic() + timeout_s, time.monotonic() + 2
        while True:
            lines = rounds_file.read_text().splitlines() if rounds_file.exists() else []
            for line in lines[seen:]:
                if on_round is not None:
                    on_round(json.loads(line))
            seen = len(lines)
            if summary.exists():
                return dict(json.loads(summary.read_text()))
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + 2
                info = self.run_info(run_id)
                if str(info.get("status", "")).startswith("finished") and not summary.exists():
                    raise DeploymentError(f"run {run_id} {info.get('status')}: "
                                          f"{info.get('status-details') or 'no summary written'}")
            if time.monotonic() >= deadline:
                raise DeploymentError(f"run {run_id} did not finish within {timeout_s:.0f} s")
            time.sleep(poll_s)

    def stop_run(self, run_id: int) -> None:
        self.flwr("stop", str(run_id), CONNECTION)


class SuperLink(_Launcher):
    """``flower-superlink`` on one HTTP port (Fleet, Control and Runtime APIs); `control` is
    the ``flwr`` CLI pointed at it."""

    def __init__(self, workdir: Path, *, port: int | None = None, host: str = LOOPBACK,
                 insecure: bool = False, tls: Tls | None = None, node_auth: bool = False) -> None:
        if not insecure and (tls is None or tls.cert is None or tls.key is None):
            raise DeploymentError("the SuperLink needs TLS (a CA, certificate and key) "
                                  "unless insecure=True")
        if insecure and node_auth:
            raise DeploymentError("SuperNode authentication needs TLS (insecure=False)")
        check_insecure(f"{host}:0", insecure)
        self.workdir = Path(workdir)
        self.flwr_home = self.workdir / "flwr_home"
        self.host, self.port = host, port or free_port()
        self.insecure, self.tls, self.node_auth = insecure, tls, node_auth
        self.group = ProcessGroup("superlink", self.workdir / "superlink.log")
        self.control = Control(self.flwr_home, self.address, insecure=insecure,
                               root_certificates=tls.ca if tls else None)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        cmd = [_script("flower-superlink"), "--host", self.host, "--port", str(self.port),
               "--disable-runtime-dependency-installation"]
        if self.insecure:
            cmd.append("--insecure")
        else:
            assert self.tls is not None
            cmd += ["--ssl-ca-certfile", str(self.tls.ca), "--ssl-certfile", str(self.tls.cert),
                    "--ssl-keyfile", str(self.tls.key)]
        if self.node_auth:
            cmd.append("--enable-supernode-auth")
        self.group.spawn(cmd, flwr_env(self.flwr_home), self.workdir)
        self.group.wait_until(lambda: listening(self.host, self.port), timeout,
                              f"SuperLink on {self.address}")


def local_tls(directory: Path, *, days: int = 30) -> Tls:
    """A fresh CA and a server certificate for ``localhost``/127.0.0.1/::1 (single-machine
    runs: the demo, benchmarks, tests). Keys are written 0600."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("fiberwatch-local-ca"))
          .issuer_name(name("fiberwatch-local-ca")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "server.pem").write_bytes(cert.public_bytes(pem))
    fd = os.open(d / "server.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return Tls(d / "ca.pem", d / "server.pem", d / "server.key")


def generate_node_keys(private_path: Path, public_path: Path) -> None:
    """An ECDSA (P-384) key pair for SuperNode authentication, in OpenSSH format (what
    ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.OpenSSH,
                                  serialization.NoEncryption()))
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))


class GatewayNode(_Launcher):
    """One gateway's SuperNode (patched poll, ``--isolation process``) and ClientApp worker."""

    def __init__(self, workdir: Path, superlink: str, *, node_config: dict[str, Any],
                 insecure: bool = False, root_certificates: Path | None = None,
                 auth_private_key: Path | None = None, poll_s: float | None = 0.1,
                 idle_s: float = 3.0, isolation: str = "process", clientapp: str = "",
                 runtime_port: int | None = None, env: dict[str, str] | None = None) -> None:
        if not insecure and root_certificates is None:
            raise DeploymentError("a SuperNode needs root certificates unless insecure=True")
        check_insecure(superlink, insecure)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.superlink, self.node_config = superlink, dict(node_config)
        self.insecure, self.root_certificates = insecure, root_certificates
        self.auth_private_key, self.poll_s, self.idle_s = auth_private_key, poll_s, idle_s
        if isolation not in ("process", "subprocess"):
            raise DeploymentError(f"isolation must be process or subprocess, not {isolation!r}")
        self.isolation, self.clientapp, self.env = isolation, clientapp, dict(env or {})
        self.runtime_port = runtime_port or free_port()
        self.group = ProcessGroup("supernode", self.workdir / "supernode.log")

    def _node_config(self) -> str:
        return " ".join(f"{k}={json.dumps(v)}" for k, v in self.node_config.items())

    def start(self, timeout: float = 120.0) -> None:
        self.launch()
        self.ready(timeout)
        self.warm(timeout)

    def launch(self) -> None:
        """Start the SuperNode; `ready` waits for it and starts the worker, `warm` waits for
        the worker: several gateways can go through each step together (`start` = all)."""
        env = flwr_env(self.workdir / "flwr_home", **self.env)
        # poll_s=None and isolation="subprocess" give stock Flower (for measurements)
        sn = ([_script("flower-supernode")] if self.poll_s is None else
              [sys.executable, "-m", "federation.flower.node_runtime", "supernode", "--poll",
               str(self.poll_s), "--idle", str(self.idle_s), "--"])
        sn += ["--superlink", self.superlink, "--isolation", self.isolation,
               "--host", LOOPBACK, "--port", str(self.runtime_port),
               "--node-config", self._node_config()]
        if self.insecure:
            sn.append("--insecure")
        else:
            sn += ["--root-certificates", str(self.root_certificates)]
        if self.auth_private_key is not None:
            sn += ["--auth-supernode-private-key", str(self.auth_private_key)]
        self.group.spawn(sn, env, self.workdir)

    def ready(self, timeout: float = 120.0) -> None:
        """Wait for the SuperNode's Runtime API, then start the worker."""
        env = flwr_env(self.workdir / "flwr_home", **self.env)
        supernode = self.group.procs[0]
        self.group.wait_until(lambda: listening(LOOPBACK, self.runtime_port), timeout,
                              f"SuperNode runtime API on port {self.runtime_port}")
        if self.isolation == "process":
            ready = self._ready_file
            ready.unlink(missing_ok=True)
            worker = [sys.executable, "-m", "federation.flower.node_runtime", "worker",
                      "--runtime-api-address", f"{LOOPBACK}:{self.runtime_port}",
                      "--parent-pid", str(supernode.pid), "--idle", str(self.idle_s),
                      "--ready-file", str(ready)]
            self.group.spawn(worker + (["--clientapp", self.clientapp] if self.clientapp
                                       else []), env, self.workdir)

    @property
    def _ready_file(self) -> Path:
        return self.workdir / "worker.ready"

    def warm(self, timeout: float = 120.0) -> None:
        """Wait until the worker has imported and warmed up the ClientApp."""
        if self.isolation == "process":
            self.group.wait_until(self._ready_file.exists, timeout, "ClientApp worker warm-up")

    def kill(self) -> None:
        self.group.kill()


def start_all(nodes: Sequence[GatewayNode], timeout: float = 120.0) -> None:
    """Start several gateways together: launch every SuperNode, then `GatewayNode.ready` each
    (starts its worker), then `GatewayNode.warm` each; ``timeout`` applies to every wait.

    Stops nothing on failure: the caller stops the nodes (as after a successful start).
    """
    for n in nodes:
        n.launch()
    for n in nodes:
        n.ready(timeout)
    for n in nodes:
        n.warm(timeout)
