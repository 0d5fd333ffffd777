"""Insecure dev mode is loopback-only: in the settings, at startup under uvicorn, per request."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from cloud.api.deps import get_settings
from cloud.api.memory import MemoryStore
from cloud.main import create_app, server_bind_host
from cloud.settings import CloudSettings, InsecureBindError
from federation.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FIBERWATCH_CLOUD_"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.example.com"])
def test_settings_refuse_insecure_dev_on_a_non_loopback_bind(host: str) -> None:
    with pytest.raises(ValidationError, match="refuses to bind"):
        CloudSettings(insecure_dev=True, bind_host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2", "unix"])
def test_settings_accept_insecure_dev_on_loopback(host: str) -> None:
    assert CloudSettings(insecure_dev=True, bind_host=host).insecure_dev


def test_the_bind_host_comes_from_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIBERWATCH_CLOUD_INSECURE_DEV", "true")
    monkeypatch.setenv("FIBERWATCH_CLOUD_BIND_HOST", "0.0.0.0")
    with pytest.raises(ValidationError, match="refuses to bind"):
        CloudSettings()


def test_check_bind_only_matters_in_insecure_dev() -> None:
    good = CloudSettings(tokens={"a-long-random-token-0123456789": {"name": "a", "role": "admin"}})
    good.check_bind("0.0.0.0")  # real tokens: any address
    with pytest.raises(InsecureBindError):
        CloudSettings(insecure_dev=True).check_bind("0.0.0.0")


def test_bind_host_is_read_from_uvicorns_lifespan() -> None:
    import uvicorn
    from uvicorn.lifespan.on import LifespanOn

    cfg = uvicorn.Config(create_app(), host="0.0.0.0", port=1)
    assert server_bind_host(LifespanOn(cfg).receive) == "0.0.0.0"
    assert server_bind_host(lambda: None) is None  # another server: unknown


def _call(app: object, server: tuple[str, int]) -> int:
    """GET a missing page (404 unless refused) through ASGI with a given local address."""
    status: list[int] = []

    async def go() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": "/no-such-page", "raw_path": b"",
                 "query_string": b"", "headers": [], "client": ("127.0.0.1", 5555),
                 "server": server, "root_path": "", "app": app}

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status.append(msg["status"])

        await app(scope, receive, send)  # type: ignore[operator]

    asyncio.run(go())
    return status[0]


def test_requests_on_a_non_loopback_address_get_403_in_insecure_dev() -> None:
    dev = create_app(CloudSettings(insecure_dev=True), store=MemoryStore())
    assert _call(dev, ("10.1.2.3", 8000)) == 403
    assert _call(dev, ("127.0.0.1", 8000)) == 404
    real = CloudSettings(tokens={"a-long-random-token-0123456789": {"name": "a", "role": "admin"}})
    assert _call(create_app(real, store=MemoryStore()), ("10.1.2.3", 8000)) == 404


def _uvicorn(host: str, port: int, insecure: bool) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIBERWATCH_CLOUD_")}
    env.update({"PYTHONPATH": str(ROOT), "FIBERWATCH_CLOUD_INSECURE_DEV": str(insecure).lower()})
    if not insecure:
        env["FIBERWATCH_CLOUD_TOKENS"] = '{"a-long-random-token-0123456789": ' \
                                         '{"name": "a", "role": "admin"}}'
    return subprocess.Popen([sys.executable, "-m", "uvicorn", "cloud.main:app", "--host", host,
                             "--port", str(port), "--lifespan", "on"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_plain_uvicorn_on_0000_refuses_insecure_dev_before_binding() -> None:
    """``uvicorn cloud.main:app --host 0.0.0.0`` with insecure dev exits at startup; the
    lifespan runs before uvicorn binds, so nothing ever listens."""
    p = _uvicorn("0.0.0.0", free_port(), insecure=True)
    try:
        out, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0
    assert "refuses to bind to '0.0.0.0'" in out
    assert "Uvicorn running" not in out
