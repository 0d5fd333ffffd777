"""Hostile requests to the API: the token before the body, bodies capped before parsing,
heavy queries capped, every query bounded, bad input 4xx (never 5xx)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from cloud.api.memory import MemoryStore
from cloud.api.sample import sample_registry, sample_store
from cloud.main import create_app
from cloud.settings import CloudSettings, TokenInfo

VIEWER, OPERATOR = "viewer-token-0123456789abcdef", "operator-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {OPERATOR}"}
S = 10**9


def _settings(**kw: Any) -> CloudSettings:
    return CloudSettings(tokens={VIEWER: TokenInfo(name="vera", role="viewer"),
                                 OPERATOR: TokenInfo(name="otto", role="operator")}, **kw)


@pytest.fixture
def store() -> MemoryStore:
    return sample_store()


@pytest.fixture
def client(store: MemoryStore) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(), store=store, registry=sample_registry())) as c:
        yield c


def _event_id(store: MemoryStore) -> str:
    return str(store.anomalies(limit=1)[0]["id"])


def test_invalid_json_without_a_token_is_401(client: TestClient, store: MemoryStore) -> None:
    url = f"/api/v1/anomalies/{_event_id(store)}/labels"
    r = client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = client.post(url, content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422  # with a token: validated


def test_an_unauthenticated_body_is_never_read() -> None:
    from cloud.api.guard import Guard

    read: list[int] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:  # the routes
        read.append(1)

    guard = Guard(inner, lambda: _settings(), "/api/v1", frozenset())
    sent: list[dict] = []

    async def receive() -> dict:
        read.append(2)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/v1/anomalies/x/labels",
             "headers": [(b"content-length", b"50000000")]}
    anyio.run(guard, scope, receive, send)
    assert read == [] and sent[0]["status"] == 401


def test_an_oversized_body_is_413_before_parsing(client: TestClient, store: MemoryStore) -> None:
    url = f"/api/v1/anomalies/{_event_id(store)}/labels"
    big = b'{"label": "note", "note": "' + b"x" * 200_000 + b'"}'
    r = client.post(url, content=big, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield big[:50_000]
        yield big[50_000:]

    r = client.post(url, content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413
    ok = client.post(url, json={"label": "note", "note": "fine"}, headers=AUTH)
    assert ok.status_code == 201


def test_heavy_queries_are_capped_with_retry_after(store: MemoryStore) -> None:
    entered, release = threading.Event(), threading.Event()
    real = store.window

    def slow_window(**kw: Any) -> dict:
        entered.set()
        assert release.wait(30)
        return real(**kw)

    store.window = slow_window  # type: ignore[method-assign]
    app = create_app(_settings(heavy_max_concurrent=1), store=store)
    params = {"site": "north-field", "stream": "das", "start": "now-10m", "end": "now",
              "ch_start": 0, "ch_end": 63}
    with TestClient(app) as c:
        first: list[int] = []
        t = threading.Thread(target=lambda: first.append(
            c.get("/api/v1/window", params=params, headers=AUTH).status_code))
        t.start()
        assert entered.wait(30)
        busy = c.get("/api/v1/window", params=params, headers=AUTH)
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        release.set()
        t.join(30)
        assert first == [200]
        assert c.get("/api/v1/window", params=params, headers=AUTH).status_code == 200


@pytest.mark.parametrize("params", [
    {"resolution": "5e-324"}, {"resolution": "inf"}, {"resolution": "nan"},
    {"max_times": str(10**30)}, {"start": "9999999999999999999"}, {"start": "now-1e300d"},
])
def test_window_bad_numbers_are_4xx(client: TestClient, params: dict) -> None:
    base = {"site": "north-field", "stream": "das", "start": "now-10m", "end": "now",
            "ch_start": 0, "ch_end": 63}
    r = client.get("/api/v1/window", params={**base, **params}, headers=AUTH)
    assert 400 <= r.status_code < 500, r.text


def test_the_sample_store_caps_cells(client: TestClient) -> None:
    params = {"site": "north-field", "stream": "das", "start": "now-7d", "end": "now",
              "ch_start": 0, "ch_end": 16383, "max_times": 5000}
    r = client.get("/api/v1/window", params=params, headers=AUTH)
    assert r.status_code == 400 and "too large" in r.json()["detail"]


def test_anomalies_are_bounded_in_time(client: TestClient, store: MemoryStore) -> None:
    seen: list[dict] = []
    real = store.anomalies

    def spy(**kw: Any) -> list[dict]:
        seen.append(kw)
        return real(**kw)

    store.anomalies = spy  # type: ignore[method-assign]
    assert client.get("/api/v1/anomalies", headers=AUTH).status_code == 200
    assert seen[-1]["start_ns"] is not None and seen[-1]["end_ns"] is not None
    assert seen[-1]["end_ns"] - seen[-1]["start_ns"] <= 366 * 86400 * S
    r = client.get("/api/v1/anomalies", params={"start": "now-800d"}, headers=AUTH)
    assert r.status_code == 400 and "exceeds the limit" in r.json()["detail"]
    for bad in ({"dist_min": "nan"}, {"dist_max": "inf"}, {"end": "99999999999999999999"},
                {"dist_max": "-6e16"}, {"model_version": "a\rb"}):
        assert client.get("/api/v1/anomalies", params=bad, headers=AUTH).status_code in (400, 422)


def test_an_overlong_event_id_is_4xx(client: TestClient) -> None:
    r = client.get("/api/v1/anomalies/" + "x" * 5000, headers=AUTH)
    assert r.status_code == 422


def test_health_reports_dead_letters(store: MemoryStore) -> None:
    store.ingest_rows.append({"client_id": "fiberwatch-ingest", "dead_letters": 3})
    with TestClient(create_app(_settings(), store=store)) as c:
        body = c.get("/api/v1/health").json()
    assert body["dead_letters"] == 3
