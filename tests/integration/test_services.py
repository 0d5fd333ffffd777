"""The fixtures start real services that answer, and stop them by PID."""

from __future__ import annotations

import os
import subprocess
import urllib.parse
import urllib.request

import pytest

from fiberwatch.services import Influxd, Mosquitto

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_mosquitto_delivers_a_message(mosquitto: Mosquitto) -> None:
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t", "t/#", "-C", "1",
         "-W", "10"],
        stdout=subprocess.PIPE,
    )
    # retained, so the subscriber gets it whenever it connects
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t", "t/x", "-m", "hi",
         "-r"],
        check=True,
    )
    out, _ = sub.communicate(timeout=15)
    assert out.strip() == b"hi"


def test_influxd_write_and_query(influxd: Influxd) -> None:
    def post(path: str, data: bytes) -> bytes:
        req = urllib.request.Request(influxd.url + path, data=data, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read()

    post("/query", urllib.parse.urlencode({"q": "CREATE DATABASE t"}).encode())
    post("/write?db=t&precision=s", b"m,k=a v=1.5 1700000000")
    body = post("/query?db=t", urllib.parse.urlencode({"q": "SELECT v FROM m"}).encode())
    assert b"1.5" in body


def test_stop_leaves_no_process(tmp_path) -> None:
    broker = Mosquitto(tmp_path / "m")
    broker.start()
    pid = broker.pid
    assert pid is not None and _alive(pid)
    broker.stop()
    assert not _alive(pid)
    server = Influxd(tmp_path / "i")
    server.start()
    pid = server.pid
    assert pid is not None and _alive(pid)
    server.stop()
    assert not _alive(pid)
