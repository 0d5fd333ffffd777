"""A process that started a Flower SuperLink and is then killed outright (SIGKILL: no cleanup
code runs, as when a test run is killed mid-way) leaves no SuperLink and no SuperExec behind
(`federation.processes`: PR_SET_PDEATHSIG; the SuperExec follows its SuperLink)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from federation.processes import _alive
from tests.integration._polling import wait_for

pytestmark = pytest.mark.integration

_PARENT = """
import os, sys, time
from pathlib import Path
from federation.flower.deployment import SuperLink
from federation.processes import descendants, wait_until
link = SuperLink(Path(sys.argv[1]), insecure=True)
link.__enter__()
kids = wait_until(lambda: d if len(d := descendants([os.getpid()])) >= 2 else None, 60,
                  "SuperLink and its SuperExec")
print(" ".join(map(str, kids)), flush=True)
time.sleep(600)
"""


def test_a_killed_parent_leaves_no_superlink_or_superexec(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path / "link")],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert parent.stdout is not None
    kids = [int(p) for p in parent.stdout.readline().split()]
    try:
        assert len(kids) >= 2 and all(_alive(p) for p in kids)
        parent.kill()
        parent.wait(10)
        wait_for(lambda: not any(_alive(p) for p in kids), 30, "Flower processes gone")
    finally:
        for p in kids:  # only if the test failed: processes it started, by PID
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        parent.kill()
        parent.wait()
