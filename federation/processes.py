"""Processes we start for Flower, stopped by process group: start, wait until ready, stop.

A `ProcessGroup` starts its first command in a new process group (in our session, so terminal
signals do not reach it and later members may join it) and the rest in the same group; `stop`
sends SIGTERM to the group, waits, then SIGKILLs what is left, and then also ends descendants
that left the group (flower-superlink starts its SuperExec in a session of its own; it watches
its parent and normally exits by itself first). Only processes started through a group, and
their descendants, are ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


class ProcessError(RuntimeError):
    """A process exited or did not become ready (the message holds its log tail)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _descendants(pids: list[int]) -> list[int]:
    """PIDs of all live descendants of ``pids`` (from /proc), e.g. the SuperExec that the
    SuperLink starts in a session of its own."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], list(pids)
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
                .lower())
    except (OSError, IndexError):
        return "zombie"


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ProcessGroup:
    """Processes started in one new process group; stopped together by its id."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name, self.log_path = name, log_path
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def pgid(self) -> int | None:
        return self.procs[0].pid if self.procs else None

    def spawn(self, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            # a new process group in our session (a later member may join it; a new session
            # could not be joined), so terminal signals do not reach it: we stop it ourselves
            kw: dict[str, Any] = {"process_group": self.pgid if self.procs else 0}
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                 **kw)
        self.procs.append(p)
        return p

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline, delay = time.monotonic() + timeout, 0.02
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise ProcessError(f"{what}: exited with status {dead[0].returncode}; "
                                      f"log tail:\n{self.tail()}")
            if check():
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        raise ProcessError(f"{what}: not ready after {timeout:.0f} s; log tail:\n{self.tail()}")

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def signal(self, sig: int) -> None:
        if self.pgid is not None and self.alive():
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, wait, SIGKILL what is left; then the same for descendants that
        left the group (they watch their parent and exit by themselves first)."""
        strays = [p for p in _descendants([q.pid for q in self.procs if q.poll() is None])
                  if p not in {q.pid for q in self.procs}]
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                p.wait(timeout)
        self.signal(signal.SIGKILL)  # children that outlived their parent (same group)
        for sig in (0, signal.SIGTERM, signal.SIGKILL):
            for pid in strays:
                if sig and _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            end = time.monotonic() + timeout / 2
            while any(_alive(p) for p in strays) and time.monotonic() < end:
                time.sleep(0.05)
            if not any(_alive(p) for p in strays):
                break

    def kill(self) -> None:
        """SIGKILL the whole group at once (a gateway losing power)."""
        self.signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(10)
