"""The one process toolkit (`federation.processes`) and the demo's `Supervisor` on it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from federation.processes import ProcessError, ProcessGroup, free_port, listening, wait_until
from fiberwatch.supervisor import Supervisor


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return True
    return "Z" in state  # killed, waiting for its new parent to reap it


def test_wait_until_returns_the_value_or_raises_the_given_error() -> None:
    values = iter([0, None, "ready"])
    assert wait_until(lambda: next(values), 10, "x") == "ready"
    with pytest.raises(AssertionError, match="thing: not ready after 0 s"):
        wait_until(lambda: False, 0, "thing", error=AssertionError)
    with pytest.raises(ProcessError, match="thing: it died"):
        wait_until(lambda: False, 60, "thing", failed=lambda: "it died")


def test_a_member_that_exits_fails_the_wait_with_its_log(tmp_path: Path) -> None:
    group = ProcessGroup("t", tmp_path / "t.log")
    group.spawn(["sh", "-c", "echo boom; exit 3"])
    with pytest.raises(ProcessError, match=r"(?s)exited with status 3.*boom"):
        group.wait_until(lambda: False, 60, "never ready")
    group.stop()


def test_stop_ends_members_that_outlived_the_leader(tmp_path: Path) -> None:
    group = ProcessGroup("t", tmp_path / "t.log")
    leader = group.spawn(["sh", "-c", f"sleep 300 & echo $! > {tmp_path}/child; exit 0"])
    leader.wait(30)
    child = int(wait_until(lambda: (tmp_path / "child").exists() and
                           (tmp_path / "child").read_text().strip(), 30, "the child's pid"))
    assert not _gone(child)
    group.stop(timeout=5)
    wait_until(lambda: _gone(child), 30, "the child to end")


def test_the_supervisor_stops_with_sigint_first(tmp_path: Path) -> None:
    marker = tmp_path / "clean"
    code = ("import signal, sys, time\n"
            f"signal.signal(signal.SIGINT, lambda *_: (open({str(marker)!r}, 'w').close(),"
            " sys.exit(0)))\n"
            f"open({str(tmp_path / 'up')!r}, 'w').close()\n"
            "time.sleep(300)\n")
    with Supervisor(tmp_path / "logs") as sup:
        child = sup.start("py", [sys.executable, "-c", code])
        wait_until((tmp_path / "up").exists, 60, "the child to start")
        assert child.alive() and os.getpgid(child.pid) == child.pid  # a group of its own
    assert not child.alive() and child.proc.returncode == 0
    assert marker.exists()  # its SIGINT handler ran: the clean shutdown path


def test_free_port_is_free_and_listening_says_so() -> None:
    port = free_port()
    assert not listening("127.0.0.1", port)


_PARENT = """
import sys, time
from pathlib import Path
from federation.processes import ProcessGroup
g = ProcessGroup("orphan", Path(sys.argv[1]))
p = g.spawn([sys.executable, "-c", "import time; time.sleep(300)"])
print(p.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_members_die_with_a_parent_that_is_killed(tmp_path: Path, how: str) -> None:
    """A parent killed mid-run (SIGKILL: no cleanup code runs) leaves no member behind."""
    import signal
    import subprocess

    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path / "log")],
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert not _gone(child)
        parent.send_signal(getattr(signal, how))
        parent.wait(10)
        wait_until(lambda: _gone(child), 10, "the orphaned member exits", error=AssertionError)
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()
