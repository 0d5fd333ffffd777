"""/models (registry), /fleet, /rounds, /health and storage failures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.api.memory import MemoryModel, MemoryRegistry, MemoryStore
from cloud.influx import InfluxError
from cloud.main import create_app
from cloud.settings import CloudSettings, TokenInfo
from tests.unit.test_cloud_ingest_parse import health_dict

VIEWER, ADMIN = "viewer-token-0123456789abcdef", "admin-token-0123456789abcdef"
SETTINGS = CloudSettings(tokens={VIEWER: TokenInfo(name="vera", role="viewer"),
                                 ADMIN: TokenInfo(name="ada", role="admin")})
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


def _registry() -> MemoryRegistry:
    registry = MemoryRegistry(MemoryModel("v1"), MemoryModel("v2", "v1"), MemoryModel("v3", "v2"))
    for version in ("v1", "v2"):
        registry.promote(version, to="canary")
        registry.promote(version, to="production")
    registry.promote("v3", to="canary")
    return registry


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    now = time.time_ns()
    s.gateways[("a", "gw-1")] = {"site": "a", "gateway": "gw-1", "last_seen_ns": now - 10**9,
                                 "status": "ok"}
    s.round_rows = [{"run_id": "r", "round": i, "time_ns": now + i, "loss": 1 / i}
                    for i in range(1, 6)]
    return s


def _client(store: MemoryStore, registry: Any = None, **settings: Any) -> TestClient:
    s = SETTINGS.model_copy(update=settings) if settings else SETTINGS
    c = TestClient(create_app(s, store=store, registry=registry))
    c.headers["Authorization"] = f"Bearer {VIEWER}"
    return c


@pytest.fixture
def client(store: MemoryStore) -> Iterator[TestClient]:
    with _client(store, _registry()) as c:
        yield c


def test_models_list_and_history(client: TestClient) -> None:
    body = client.get("/api/v1/models").json()
    assert body["production"] == "v2"
    assert {m["version"]: m["state"] for m in body["items"]} == {
        "v1": "retired", "v2": "production", "v3": "canary"}
    history = client.get("/api/v1/models/history").json()["items"]
    assert history[-1] == {**history[-1], "version": "v3", "to": "canary"}


def test_admin_promotes_and_rolls_back(client: TestClient) -> None:
    r = client.post("/api/v1/models/v3/promote", json={"to": "production", "reason": "canary ok"},
                    headers=AS_ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "production"
    last = client.get("/api/v1/models/history").json()["items"][-1]
    assert (last["actor"], last["reason"]) == ("ada", "canary ok")
    r = client.post("/api/v1/models/rollback", json={"reason": "false alarms"}, headers=AS_ADMIN)
    assert r.status_code == 200 and r.json()["version"] == "v2"


@pytest.mark.parametrize(("url", "body", "status", "reason"), [
    ("/api/v1/models/v1/promote", {"to": "production"}, 409, "cannot promote v1 from retired"),
    ("/api/v1/models/v9/promote", {"to": "canary"}, 404, "no model version 'v9'"),
    ("/api/v1/models/v3/promote", {"to": "live"}, 422, "'candidate', 'canary'"),
    ("/api/v1/models/v3/promote", {}, 422, "Field required"),
])
def test_promotion_errors(client: TestClient, url: str, body: dict, status: int,
                          reason: str) -> None:
    r = client.post(url, json=body, headers=AS_ADMIN)
    assert r.status_code == status
    assert reason in str(r.json()["detail"])


def test_rollback_without_history_is_409(store: MemoryStore) -> None:
    with _client(store, MemoryRegistry(MemoryModel("v1"))) as c:
        r = c.post("/api/v1/models/rollback", json={}, headers=AS_ADMIN)
    assert r.status_code == 409 and "no previous production" in r.json()["detail"]


def test_models_without_a_registry_are_503_with_the_reason(store: MemoryStore) -> None:
    with _client(store) as c:  # SETTINGS has no registry_dir
        r = c.get("/api/v1/models")
        assert r.status_code == 503 and "no model registry configured" in r.json()["detail"]
        assert c.get("/api/v1/health").json()["registry"] == "not configured"


def test_a_registry_dir_loads_the_federation_registry(store: MemoryStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with _client(store, registry_dir=tmp_path / "registry") as c:
        assert c.get("/api/v1/models").json() == {"items": [], "production": None}
    assert (tmp_path / "registry").is_dir()


def test_fleet_and_rounds(client: TestClient) -> None:
    fleet = client.get("/api/v1/fleet").json()
    assert fleet["items"][0]["gateway"] == "gw-1" and fleet["now_ns"] > 0
    rounds = client.get("/api/v1/rounds", params={"limit": 2}).json()["items"]
    assert [r["round"] for r in rounds] == [5, 4]
    assert client.get("/api/v1/rounds", params={"limit": 1001}).status_code == 422


def test_fleet_latency_per_stream_and_older_agents(store: MemoryStore) -> None:
    by = {"das": {"p50": 120.0, "p99": 481.0}, "dts": {"p50": 2512.0, "p99": 4030.0}}
    store.add_health(health_dict(gateway="well-a", latency_ms={"p50": 200.0, "p99": 3162.0},
                                 latency_ms_by_stream=by))
    store.add_health(health_dict(gateway="well-b"))  # an agent that does not report per stream
    with _client(store) as c:
        body = c.get("/api/v1/fleet").json()
        schema = c.get("/openapi.json").json()["components"]["schemas"]["FleetRow"]
    rows = {g["gateway"]: g for g in body["items"]}
    a, b = rows["well-a"], rows["well-b"]
    assert a["latency_p99_ms"] == 3162.0 and a["status"] == "ok"  # the other keys pass through
    assert a["latency_p99_ms_by_stream"] == {"das": 481.0, "dts": 4030.0}
    assert a["latency_p50_ms_by_stream"] == {"das": 120.0, "dts": 2512.0}
    assert b["latency_p99_ms"] == 3.0 and b["latency_p99_ms_by_stream"] == {}
    assert rows["gw-1"]["latency_p99_ms_by_stream"] == {}  # a row without any latency
    assert "latency_p99_ms_by_stream" in schema["properties"]
    # a heartbeat without a dts window keeps the last dts value (as InfluxDB's fleet point)
    store.add_health(health_dict(gateway="well-a",
                                 latency_ms_by_stream={"das": {"p50": 100.0, "p99": 450.0}}))
    (a,) = [g for g in store.fleet() if g["gateway"] == "well-a"]
    assert a["latency_p99_ms_by_stream"] == {"das": 450.0, "dts": 4030.0}


def test_fleet_false_alarm_mutes_and_older_agents(store: MemoryStore) -> None:
    store.add_health(health_dict(gateway="well-a", fa_mutes_active=2, fa_muted_windows=37,
                                 fa_muted_groups=52))
    store.add_health(health_dict(gateway="well-b"))  # an agent that does not count them
    with _client(store) as c:
        body = c.get("/api/v1/fleet").json()
        schema = c.get("/openapi.json").json()["components"]["schemas"]["FleetRow"]
    rows = {g["gateway"]: g for g in body["items"]}
    keys = ("fa_mutes_active", "fa_muted_windows", "fa_muted_groups")
    assert [rows["well-a"][k] for k in keys] == [2, 37, 52]
    assert [rows["well-b"][k] for k in keys] == [None, None, None]
    assert rows["well-a"]["latency_p99_ms"] == 3.0 and rows["well-a"]["status"] == "ok"
    assert set(keys) <= set(schema["properties"])


def test_health_is_open_and_reports_ingestion(client: TestClient, store: MemoryStore) -> None:
    r = client.get("/api/v1/health", headers={"Authorization": ""})
    assert r.status_code == 200
    assert r.json() == {**r.json(), "status": "ok", "influx": "ok", "ingestion": "ok",
                        "registry": "ok"}
    store.gateways[("a", "gw-1")]["last_seen_ns"] = time.time_ns() - 3600 * 10**9
    body = client.get("/api/v1/health").json()
    assert (body["status"], body["ingestion"]) == ("degraded", "stale")
    assert body["last_data_age_s"] == pytest.approx(3600, abs=5)
    store.gateways.clear()
    assert client.get("/api/v1/health").json()["ingestion"] == "no data"


def test_health_is_503_when_influx_is_down(client: TestClient, store: MemoryStore) -> None:
    store.up = False
    r = client.get("/api/v1/health")
    assert r.status_code == 503
    assert r.json()["influx"] == "unreachable" and r.json()["ingestion"] == "unknown"


@pytest.mark.parametrize(("retryable", "status", "reason"), [
    (True, 503, "storage unavailable"), (False, 502, "storage query failed")])
def test_storage_errors_become_503_or_502(client: TestClient, store: MemoryStore,
                                          retryable: bool, status: int, reason: str) -> None:
    def fail(**_: Any) -> list:
        raise InfluxError("/query: connection refused", retryable=retryable)

    store.anomalies = fail  # type: ignore[method-assign]
    r = client.get("/api/v1/anomalies")
    assert r.status_code == status
    assert reason in r.json()["detail"] and "connection refused" not in r.json()["detail"]
