"""``fiberwatch cloud ingest --workers N``: N ingestion processes splitting the stream.

The split is the broker's: every process subscribes to feature summaries through one MQTT
shared subscription (`IngestSettings.share_group`); process 0 is the primary and also takes
events, health and model state. This module only starts the processes (``python -m
cloud.ingest`` with per-process flags), watches them and stops them: SIGINT/SIGTERM to the
parent sends SIGTERM to each child (by PID), waits for their drain, then kills what is left;
a launcher killed outright takes its workers with it (``PR_SET_PDEATHSIG``, `die_with_parent`).
If a child exits on its own, the others are stopped too and the parent exits 1, so a
supervisor (systemd, the demo's) sees one failed unit and restarts it whole.

On a broker that takes logins as client ids (the shipped secure one: ``use_username_as_clientid``)
every connection needs its own login. ``--worker-logins`` then starts a primary that takes
events, health and model state only (``--no-features``, the given login, e.g. ``ingest``) and
N feature workers, worker k logging in as `worker_login` (``ingest-fk``) with the files of
that login: ``clients/ingest-fk/password`` (and ``client.crt``/``client.key`` with mutual TLS)
beside the primary's ``clients/ingest/...``, the layout `fiberwatch deploy --ingest-workers N`
writes (`worker_credentials`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config import BrokerConfig
from federation.processes import die_with_parent

log = logging.getLogger("cloud.ingest.workers")
DEFAULT_SHARE_GROUP = "fiberwatch-ingest"


def worker_login(base: str, k: int) -> str:
    """The login of feature worker `k` (1, 2, ...) when the primary logs in as `base`."""
    return f"{base}-f{k}"


@dataclass(frozen=True)
class Login:
    """One worker's broker login: the flags that override the launcher's."""

    username: str
    password_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def flags(self) -> list[str]:
        out = ["--mqtt-username", self.username, "--mqtt-password-file", str(self.password_file)]
        if self.cert_file is not None and self.key_file is not None:
            out += ["--mqtt-cert", str(self.cert_file), "--mqtt-key", str(self.key_file)]
        return out

    def missing(self) -> list[Path]:
        return [f for f in (self.password_file, self.cert_file, self.key_file)
                if f is not None and not f.is_file()]


def worker_credentials(broker: BrokerConfig, workers: int) -> list[Login]:
    """The logins of feature workers 1..`workers`, from the primary's: same file names, in
    the folder of the worker's login next to the primary's (``clients/ingest/password`` ->
    ``clients/ingest-f1/password``).

    Raises
    ------
    ValueError
        Without a username or a password file (an environment password cannot differ per
        worker), or if a worker's files are missing.
    """
    if not broker.username or broker.password_file is None:
        raise ValueError("--worker-logins needs --mqtt-username and --mqtt-password-file "
                         "(each worker reads its own password file)")
    clients = Path(broker.password_file).parent.parent

    def beside(login: str, f: Path | None) -> Path | None:
        return None if f is None else clients / login / Path(f).name

    out = []
    for k in range(1, workers + 1):
        u = worker_login(broker.username, k)
        login = Login(u, clients / u / Path(broker.password_file).name,
                      beside(u, broker.cert_file), beside(u, broker.key_file))
        if login.missing():
            raise ValueError(f"login {u}: missing {', '.join(map(str, login.missing()))} (run "
                             f"`fiberwatch deploy creds --ingest-workers {workers}`)")
        out.append(login)
    return out


def process_count(args: argparse.Namespace) -> int:
    """Processes the launcher starts: the workers, plus the primary with `--worker-logins`."""
    return args.workers + (1 if getattr(args, "logins", None) and args.primary else 0)


def child_argv(args: argparse.Namespace, passthrough: Sequence[str], index: int) -> list[str]:
    """Flags of worker `index`: its own client id and stats file, the shared group, and
    ``--no-primary`` for all but worker 0 (and for all if this launcher is not primary).
    With ``args.logins`` (`worker_credentials`), process 0 is a primary without features and
    process k the feature worker with login k."""
    logins: list[Login] | None = getattr(args, "logins", None)
    out = [*passthrough, "--client-id", f"{args.client_id}-{index}",
           "--share-group", args.share_group or DEFAULT_SHARE_GROUP]
    k = index if args.primary else index + 1  # with logins: 0 is the primary
    if logins and k == 0:
        out.append("--no-features")
    elif logins:
        out += [*logins[k - 1].flags(), "--no-primary"]
    elif index > 0 or not args.primary:
        out.append("--no-primary")
    if args.stats_file:
        out += ["--stats-file", f"{args.stats_file}.{index}"]
    return out


def run_workers(args: argparse.Namespace, passthrough: Sequence[str],
                stop: threading.Event | None = None) -> int:
    """Start ``args.workers`` processes and supervise them until a signal (or `stop`)."""
    stop = stop or threading.Event()
    procs = [subprocess.Popen([sys.executable, "-m", "cloud.ingest",
                               *child_argv(args, passthrough, i)],
                              preexec_fn=die_with_parent)
             for i in range(process_count(args))]
    log.info("event=workers_started pids=%s", ",".join(str(p.pid) for p in procs))
    failed = None
    try:
        while not stop.wait(0.2):
            failed = next((p for p in procs if p.poll() is not None), None)
            if failed is not None:
                log.error("event=worker_exited pid=%d status=%s; stopping the others",
                          failed.pid, failed.returncode)
                break
    finally:
        _stop_all(procs, args.drain_timeout_s)
    if failed is not None:
        return 1
    return 0 if all(p.returncode == 0 for p in procs) else 1


def _stop_all(procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.error("event=worker_killed pid=%d (no exit %.0f s after SIGTERM)", p.pid,
                      timeout_s)
            p.kill()
            p.wait()
