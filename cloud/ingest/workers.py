"""``fiberwatch cloud ingest --workers N``: N ingestion processes splitting the stream.

The split is the broker's: every process subscribes to feature summaries through one MQTT
shared subscription (`IngestSettings.share_group`); process 0 is the primary and also takes
events, health and model state. This module only starts the processes (``python -m
cloud.ingest`` with per-process flags), watches them and stops them: SIGINT/SIGTERM to the
parent sends SIGTERM to each child (by PID), waits for their drain, then kills what is left.
If a child exits on its own, the others are stopped too and the parent exits 1, so a
supervisor (systemd, the demo's) sees one failed unit and restarts it whole.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

log = logging.getLogger("cloud.ingest.workers")
DEFAULT_SHARE_GROUP = "fiberwatch-ingest"


def child_argv(args: argparse.Namespace, passthrough: Sequence[str], index: int) -> list[str]:
    """Flags of worker `index`: its own client id and stats file, the shared group, and
    ``--no-primary`` for all but worker 0 (and for all if this launcher is not primary)."""
    out = [*passthrough, "--client-id", f"{args.client_id}-{index}",
           "--share-group", args.share_group or DEFAULT_SHARE_GROUP]
    if index > 0 or not args.primary:
        out.append("--no-primary")
    if args.stats_file:
        out += ["--stats-file", f"{args.stats_file}.{index}"]
    return out


def run_workers(args: argparse.Namespace, passthrough: Sequence[str],
                stop: threading.Event | None = None) -> int:
    """Start ``args.workers`` processes and supervise them until a signal (or `stop`)."""
    stop = stop or threading.Event()
    procs = [subprocess.Popen([sys.executable, "-m", "cloud.ingest",
                               *child_argv(args, passthrough, i)])
             for i in range(args.workers)]
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
