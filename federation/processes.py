"""The project's one process toolkit: start processes, wait until they are ready, stop them.

Used by the Flower deployment (`federation.flower.deployment`), the service wrappers
(`fiberwatch.services`: Mosquitto, influxd) and the demo's supervisor
(`fiberwatch.supervisor`). Also the one `free_port` and the one `wait_until`.

A `ProcessGroup` starts its first command in a new process group (in our session, so terminal
signals do not reach it and later members may join it) and the rest in the same group; `stop`
sends its stop signals (SIGTERM by default; the demo's children get SIGINT first, their clean
shutdown path) to the group, waits, then SIGKILLs what is left, and then also ends descendants
that left the group (flower-superlink starts its SuperExec in a session of its own; it watches
its parent and normally exits by itself first). Only processes started through a group, and
their descendants, are ever signalled.

Members also end when their parent does, however it ends: each is started with
``PR_SET_PDEATHSIG`` = SIGTERM (Linux; `die_with_parent`), so the kernel signals it when the
thread that started it exits, SIGKILL included; and groups still running at the parent's
exit are stopped (`_stop_live_groups`: at ``atexit``, and on a SIGTERM the process had no
handler for). The death signal follows the starting *thread*, so it is set only for members
started from the main thread (a helper thread that ends would take them with it).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
T = TypeVar("T")


class ProcessError(RuntimeError):
    """A process exited or did not become ready (the message holds its log tail)."""


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def descendants(pids: list[int]) -> list[int]:
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


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (from /proc), 0.0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


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
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], T], timeout: float, what: str, *,
               failed: Callable[[], str | None] | None = None, max_interval: float = 0.2,
               error: type[Exception] = ProcessError) -> T:
    """Poll ``check()`` (backing off from 10 ms to ``max_interval``) until it returns a truthy
    value, and return that value. ``failed()``, polled too, returns a reason to give up early
    (a process died); ``error(message)`` is raised on that or after ``timeout`` seconds."""
    deadline, delay = time.monotonic() + timeout, 0.01
    while True:
        value = check()
        if value:
            return value
        reason = failed() if failed is not None else None
        if reason:
            raise error(f"{what}: {reason}")
        if time.monotonic() >= deadline:
            raise error(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, max_interval)


#: `ProcessGroup.stop`'s default signal sequence (SIGKILL always follows)
_TERM = (signal.SIGTERM,)


_PR_SET_PDEATHSIG = 1
_LIVE: weakref.WeakSet[ProcessGroup] = weakref.WeakSet()  # groups with members started


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()


def die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when the parent (thread) dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _stop_live_groups() -> None:
    """Stop every group still running (at exit, or on an unhandled SIGTERM)."""
    for group in list(_LIVE):
        if group.alive():
            group.stop(timeout=3.0, then_s=1.0)


def _on_sigterm(signum: int, frame: object) -> None:
    """The default SIGTERM, after the groups: stop them, then die of the signal as before."""
    del signum, frame
    _stop_live_groups()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_exit_hooks() -> None:
    """Once, from the main thread: the atexit hook, and the SIGTERM one where SIGTERM has
    its default action (a program with its own handler keeps it and stops groups there)."""
    if getattr(_install_exit_hooks, "done", False):
        return
    _install_exit_hooks.done = True  # type: ignore[attr-defined]
    atexit.register(_stop_live_groups)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


class ProcessGroup:
    """Processes started in one new process group; stopped together by its id."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name, self.log_path = name, log_path
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def pgid(self) -> int | None:
        return self.procs[0].pid if self.procs else None

    def spawn(self, cmd: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in the group (the first one makes it), output to the group's log."""
        with open(self.log_path, "ab") as out:
            # a new process group in our session (a later member may join it; a new session
            # could not be joined), so terminal signals do not reach it: we stop it ourselves
            kw: dict[str, Any] = {"process_group": self.pgid if self.procs else 0}
            if threading.current_thread() is threading.main_thread():
                kw["preexec_fn"] = die_with_parent
                _install_exit_hooks()
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, cwd=cwd, **kw)
        self.procs.append(p)
        _LIVE.add(self)
        return p

    def exited(self) -> str | None:
        """Why the group is broken (a member exited, with the log tail), else None."""
        dead = [p for p in self.procs if p.poll() is not None]
        if not dead:
            return None
        return f"exited with status {dead[0].returncode}; log tail:\n{self.tail()}"

    def wait_until(self, check: Callable[[], T], timeout: float, what: str) -> T:
        """`wait_until` that gives up as soon as a member exits; the error has the log tail."""
        try:
            return wait_until(check, timeout, what, failed=self.exited)
        except ProcessError as exc:
            if "log tail" in str(exc):
                raise
            raise ProcessError(f"{exc}; log tail:\n{self.tail()}") from None

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

    def stop(self, timeout: float = 10.0, *, signals: Sequence[int] = _TERM,
             then_s: float = 5.0) -> None:
        """Send each of ``signals`` to the group in turn until every member has exited
        (waiting ``timeout`` after the first, ``then_s`` after the others), then SIGKILL what
        is left; then the same for descendants that left the group (they watch their parent
        and exit by themselves first)."""
        strays = [p for p in descendants([q.pid for q in self.procs if q.poll() is None])
                  if p not in {q.pid for q in self.procs}]
        for i, sig in enumerate(signals):
            if not self.alive():
                break
            self.signal(sig)
            if not self._wait_all(timeout if i == 0 else then_s):
                log.warning("process group name=%s pgid=%s ignored %s", self.name, self.pgid,
                            signal.Signals(sig).name)
        if self.pgid is not None:  # what is left, and members that outlived the leader: Linux
            with contextlib.suppress(ProcessLookupError, PermissionError):  # never reuses a
                os.killpg(self.pgid, signal.SIGKILL)  # live group's id, so these are ours
        self._wait_all(timeout)
        _end_strays(strays, timeout / 2)

    def _wait_all(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every member to exit; True if they all did."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                return False
        return True

    def kill(self) -> None:
        """SIGKILL the whole group at once (a gateway losing power)."""
        self.signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(10)


def _end_strays(pids: list[int], timeout: float) -> None:
    """Give ``pids`` (descendants that left our group) ``timeout`` s to exit by themselves,
    then SIGTERM, then SIGKILL them, each with the same wait."""
    for sig in (0, signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if sig and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        end = time.monotonic() + timeout
        while any(_alive(p) for p in pids) and time.monotonic() < end:
            time.sleep(0.05)
        if not any(_alive(p) for p in pids):
            return
