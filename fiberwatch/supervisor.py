"""Start a set of child processes and stop every one of them, in reverse order, by PID.

Each child is a `federation.processes.ProcessGroup` of its own, so stopping it also stops
whatever it started; stop sends SIGINT (clean shutdown path), then SIGTERM, then SIGKILL, each
after a grace period. Used by the demo and the end-to-end test.
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

from federation.processes import ProcessGroup

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    group: ProcessGroup
    started: float = field(default_factory=time.monotonic)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.group.procs[0]

    @property
    def log_path(self) -> Path:
        return self.group.log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        return self.group.tail(n)


class Supervisor:
    """Owns child processes; `stop_all` leaves none running."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **(env or {})}
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Child:
        group = ProcessGroup(name, self.log_dir / f"{name}.log")
        proc = group.spawn(argv, {**self.env, **(env or {})}, cwd)
        child = Child(name, argv, group)
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
        """SIGINT (the clean shutdown path), then SIGTERM, then SIGKILL, to the child's
        process group: it and what it started."""
        child.group.stop(grace, signals=(signal.SIGINT, signal.SIGTERM))

    def stop_all(self, grace: float = 10.0) -> None:
        for child in reversed(self.children):
            self.stop(child, grace)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
