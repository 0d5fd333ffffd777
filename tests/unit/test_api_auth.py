"""Bearer tokens and roles on every API route (parametrized over the OpenAPI document)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from cloud.api.memory import MemoryModel, MemoryRegistry, MemoryStore
from cloud.main import API_PREFIX, create_app
from cloud.settings import ROLE_RANK, CloudSettings, TokenInfo

TOKENS = {role: f"{role}-token-0123456789abcdef" for role in ROLE_RANK}
OPEN = {("get", f"{API_PREFIX}/health")}


def _operations() -> list[tuple[str, str, dict]]:
    spec = create_app().openapi()  # routes only: no settings, store or registry needed
    return [(m, p, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = CloudSettings(tokens={t: TokenInfo(name=r, role=r) for r, t in TOKENS.items()})
    registry = MemoryRegistry(MemoryModel("v1", state="canary"))
    with TestClient(create_app(settings, store=MemoryStore(), registry=registry)) as c:
        yield c


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _call(client: TestClient, method: str, path: str, token: str | None = None,
          scheme: str = "Bearer"):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    return client.request(method, _url(path), headers=headers)


def test_the_matrix_covers_the_api() -> None:
    paths = {p for _, p, _ in OPERATIONS}
    resources = ("anomalies", "window", "fleet", "models", "rounds")
    assert {f"{API_PREFIX}/{p}" for p in resources} <= paths
    assert f"{API_PREFIX}/models/{{version}}/promote" in paths


def test_no_api_route_hides_from_the_schema() -> None:
    hidden = [r.path for r in create_app().routes
              if isinstance(r, APIRoute) and r.path.startswith(API_PREFIX)
              and not r.include_in_schema]
    assert hidden == []


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS,
                         ids=[f"{m.upper()} {p}" for m, p, _ in OPERATIONS])
def test_every_route_but_health_needs_a_token_and_role(
    client: TestClient, method: str, path: str, op: dict
) -> None:
    if (method, path) in OPEN:
        assert _call(client, method, path).status_code in (200, 503)
        return
    role = op.get("x-required-role")
    assert role in ROLE_RANK, f"{method} {path} does not declare its role with deps.needs()"
    if method != "get":
        assert role != "viewer", f"{method} {path} lets viewers write"

    r = _call(client, method, path)
    assert r.status_code == 401
    assert "missing bearer token" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert _call(client, method, path, "not-a-token-0123456789abc").status_code == 401
    assert _call(client, method, path, TOKENS["admin"], scheme="Basic").status_code == 401
    for other, rank in ROLE_RANK.items():
        r = _call(client, method, path, TOKENS[other])
        if rank < ROLE_RANK[role]:
            assert r.status_code == 403, other
            assert f"needs {role!r}" in r.json()["detail"]
        else:  # past auth: whatever the handler says of the dummy path and missing params
            assert r.status_code not in (401, 403), (other, r.text)


def test_me_names_the_token_owner(client: TestClient) -> None:
    r = client.get(f"{API_PREFIX}/me", headers={"Authorization": f"Bearer {TOKENS['operator']}"})
    assert r.json() == {"name": "operator", "role": "operator"}


def test_hashed_tokens_authenticate(client: TestClient) -> None:
    import hashlib

    token = "hashed-token-0123456789abcdef"
    digest = hashlib.sha256(token.encode()).hexdigest()
    settings = CloudSettings(tokens={f"sha256:{digest}": TokenInfo(name="bot", role="viewer")})
    with TestClient(create_app(settings, store=MemoryStore())) as c:
        ok = c.get(f"{API_PREFIX}/me", headers={"Authorization": f"Bearer {token}"})
        raw = c.get(f"{API_PREFIX}/me", headers={"Authorization": f"Bearer sha256:{digest}"})
    assert ok.json()["name"] == "bot"
    assert raw.status_code == 401


def test_dashboard_shell_and_assets_are_open(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "fiberwatch" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for asset in ("app.js", "api.js", "waterfall.js", "panels.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200, asset
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 200
