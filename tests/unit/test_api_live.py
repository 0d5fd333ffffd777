"""/api/v1/live: server-sent events over a real uvicorn server, read with httpx streaming."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from cloud.api.memory import MemoryStore
from cloud.api.routes.live import Snapshots
from cloud.main import API_PREFIX, create_app
from cloud.settings import CloudSettings, TokenInfo
from fiberwatch.services import LOOPBACK, free_port

TOKEN = "viewer-token-0123456789abcdef"


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    settings = CloudSettings(tokens={TOKEN: TokenInfo(name="v", role="viewer")})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, store=MemoryStore()),
                                           host=LOOPBACK, port=port, log_level="warning",
                                           ws="none"))
    thread = threading.Thread(target=server.run)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.02)
    yield f"http://{LOOPBACK}:{port}"
    server.should_exit = True
    thread.join(15)


def _events(lines: Iterator[str], n: int) -> list[tuple[str, dict[str, Any]]]:
    out, name = [], ""
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, json.loads(line[6:])))
            if len(out) == n:
                return out
    return out


def test_stream_sends_every_topic_on_connect(base: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
    with httpx.stream("GET", f"{base}{API_PREFIX}/live", headers=headers, timeout=20) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = _events(r.iter_lines(), 3)
    assert {name for name, _ in got} == {"events", "fleet", "rounds"}
    assert all("items" in body and body["now_ns"] > 0 for _, body in got)


def test_stream_needs_a_token_and_the_accept_header(base: str) -> None:
    url = f"{base}{API_PREFIX}/live"
    assert httpx.get(url, headers={"Accept": "text/event-stream"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 406


def test_snapshots_share_reads_and_change_digest() -> None:
    calls = []
    snaps = Snapshots(ttl_s=3600)
    value = {"a": 1}

    def read() -> dict[str, int]:
        calls.append(1)
        return dict(value)

    d1 = snaps.get("t", read)[1]
    assert snaps.get("t", read)[1] == d1 and len(calls) == 1  # cached within the ttl
    snaps.ttl_s = 0
    value["a"] = 2
    assert snaps.get("t", read)[1] != d1 and len(calls) == 2
