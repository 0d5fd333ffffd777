"""Start a set of child processes and stop every one of them, in reverse order, by PID.

Each child runs in its own session (process group), so stopping it also stops whatever it
started; stop sends SIGINT (clean shutdown path), then SIGTERM, then SIGKILL, each after a
grace period. Used by the demo and the end-to-end test.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class Supervisor:
    """Owns child processes; `stop_all` leaves none running."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **(env or {})}
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**self.env, **(env or {})}, cwd=cwd, start_new_session=True,
            )
        child = Child(name, argv, proc, log_path)
        self.children.append(child)
        log.info("started name=%s pid=%d", name, proc.pid)
        return child

    def python(
        self, name: str, module: str, *args: str, env: dict[str, str] | None = None
    ) -> Child:
        """Start ``python -m module args`` with this interpreter."""
        return self.start(name, [sys.executable, "-m", module, *args], env=env)

    def dead(self) -> list[Child]:
        return [c for c in self.children if not c.alive()]

    def stop(self, child: Child, grace: float = 10.0) -> None:
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not child.alive():
                break
            try:
                os.killpg(child.pid, sig)  # the child's own group: it and what it started
            except ProcessLookupError:
                break
            try:
                child.proc.wait(wait)
            except subprocess.TimeoutExpired:
                log.warning("child name=%s pid=%d ignored %s", child.name, child.pid, sig.name)
        # reap stragglers the child left in its group
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop_all(self, grace: float = 10.0) -> None:
        for child in reversed(self.children):
            self.stop(child, grace)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
