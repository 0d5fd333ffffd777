"""/api/v1/alerts: listing, role-checked acknowledge/resolve and the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud.alerting.engine import Alerter
from cloud.alerting.service import load_config
from cloud.alerting.state import AlertState
from cloud.api.memory import MemoryStore
from cloud.main import API_PREFIX, create_app
from cloud.settings import ROLE_RANK, CloudSettings, TokenInfo

TOKENS = {role: f"{role}-token-0123456789abcdef" for role in ROLE_RANK}
CONFIG = """
[alerting]
state_db = "{db}"
[[receivers]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/hook"
[[rules]]
name = "all"
receivers = ["hook"]
"""


def _h(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    cfg = tmp_path / "alerts.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "alerts.sqlite"))
    config = load_config(cfg)
    state = AlertState(config.alerting.state_db)
    Alerter(config, state).observe({"id": "e1", "site": "s", "gateway": "g", "severity": "high",
                                    "class_hint": "leak", "received_ns": 1})
    state.close()
    settings = CloudSettings(tokens={t: TokenInfo(name=f"{r}-user", role=r)
                                     for r, t in TOKENS.items()}, alerting_config=cfg)
    with TestClient(create_app(settings, store=MemoryStore())) as c:
        yield c


def test_list_ack_resolve_audit(client: TestClient) -> None:
    r = client.get(f"{API_PREFIX}/alerts", headers=_h("viewer"))
    assert r.status_code == 200
    body = r.json()
    assert [a["event_id"] for a in body["items"]] == ["e1"] and body["queued"] == {"hook": 1}
    assert client.post(f"{API_PREFIX}/alerts/e1/ack", headers=_h("viewer")).status_code == 403
    assert client.post(f"{API_PREFIX}/alerts/nope/ack", headers=_h("operator")).status_code == 404
    r = client.post(f"{API_PREFIX}/alerts/e1/ack", headers=_h("operator"), json={"note": "mine"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    assert client.post(f"{API_PREFIX}/alerts/e1/ack", headers=_h("admin")).status_code == 409
    assert client.post(f"{API_PREFIX}/alerts/e1/resolve", headers=_h("admin"),
                       json={"note": "x" * 2001}).status_code == 422
    assert client.post(f"{API_PREFIX}/alerts/e1/resolve", headers=_h("admin")).status_code == 200
    r = client.get(f"{API_PREFIX}/alerts", params={"status": "resolved"}, headers=_h("viewer"))
    assert r.json()["queued"] == {"hook": 3}  # fire, acknowledged, resolved: all queued
    audit = client.get(f"{API_PREFIX}/alerts/audit", params={"event_id": "e1"},
                       headers=_h("viewer")).json()["items"]
    assert [(a["actor"], a["action"], a["detail"]) for a in audit] == [
        ("admin-user", "resolve", ""), ("operator-user", "acknowledge", "mine"),
        ("system", "fire", "rule all")]


def test_not_configured_lists_nothing_and_refuses_changes() -> None:
    settings = CloudSettings(tokens={TOKENS["operator"]: TokenInfo(name="o", role="operator")})
    with TestClient(create_app(settings, store=MemoryStore())) as c:
        listed = c.get(f"{API_PREFIX}/alerts", headers=_h("operator"))
        acked = c.post(f"{API_PREFIX}/alerts/e1/ack", headers=_h("operator"))
    assert listed.status_code == 200 and listed.json()["configured"] is False
    assert acked.status_code == 503 and "not configured" in acked.json()["detail"]
