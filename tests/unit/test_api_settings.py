"""CloudSettings: tokens from env and files, insecure set-ups refused, built in the lifespan."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from cloud.api.deps import get_settings
from cloud.api.memory import MemoryStore
from cloud.main import create_app
from cloud.settings import DEV_TOKEN, CloudSettings, TokenInfo

GOOD = "a-long-random-token-0123456789"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("FIBERWATCH_CLOUD_"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({}, "no API tokens configured"),
    ({"tokens": {"short": {"name": "a", "role": "admin"}}}, "token for 'a' is weak"),
    ({"tokens": {GOOD: {"name": "a", "role": "root"}}}, "'viewer', 'operator' or 'admin'"),
    ({"tokens": {GOOD: {"name": "a", "role": "admin"}}, "cors_origins": ["*"]}, "CORS origin '*'"),
    ({"tokens": {GOOD: {"name": "a", "role": "admin"}}, "influx_url": "http://db.example:8086"},
     "off loopback without credentials"),
    ({"tokens": {GOOD: {"name": "a", "role": "admin"}}, "influx_username": "u"},
     "without influx_password"),
])
def test_insecure_settings_are_refused(kwargs: dict, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason.replace("(", r"\(").replace("*", r"\*")):
        CloudSettings(**kwargs)


def test_insecure_dev_accepts_and_adds_a_dev_admin_token() -> None:
    s = CloudSettings(insecure_dev=True, cors_origins=["*"])
    assert s.principal_for(DEV_TOKEN) == TokenInfo(name="dev", role="admin")
    assert CloudSettings(tokens={GOOD: {"name": "a", "role": "viewer"}}).principal_for(
        DEV_TOKEN) is None


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_tokens_file(tmp_path: Path, suffix: str) -> None:
    digest = hashlib.sha256(b"bot-token-0123456789abcdef").hexdigest()
    entries = {GOOD: {"name": "alice", "role": "admin"},
               f"sha256:{digest}": {"name": "bot", "role": "operator"}}
    path = tmp_path / f"tokens{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(entries))
    else:
        path.write_text("".join(f'"{k}" = {{ name = "{v["name"]}", role = "{v["role"]}" }}\n'
                                for k, v in entries.items()))
    s = CloudSettings(tokens_file=path)
    assert s.principal_for(GOOD) == TokenInfo(name="alice", role="admin")
    assert s.principal_for("bot-token-0123456789abcdef") == TokenInfo(name="bot", role="operator")
    assert s.principal_for(f"sha256:{digest}") is None


def test_bad_tokens_file_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read tokens file"):
        CloudSettings(tokens_file=tmp_path / "missing.toml")
    bad = tmp_path / "t.toml"
    bad.write_text("not toml ===")
    with pytest.raises(ValidationError, match="is not valid TOML"):
        CloudSettings(tokens_file=bad)


def test_settings_come_from_the_environment_in_the_lifespan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(store=MemoryStore())  # nothing read yet: no tokens, and no error
    monkeypatch.setenv("FIBERWATCH_CLOUD_TOKENS", json.dumps({GOOD: {"name": "env",
                                                                     "role": "viewer"}}))
    monkeypatch.setenv("FIBERWATCH_CLOUD_WINDOW_MAX_TIMES", "100")
    with TestClient(app) as c:
        r = c.get("/api/v1/me", headers={"Authorization": f"Bearer {GOOD}"})
        assert r.json() == {"name": "env", "role": "viewer"}
        assert get_settings().window_max_times == 100


def test_the_lifespan_refuses_insecure_environment() -> None:
    with pytest.raises(ValidationError, match="no API tokens"), \
            TestClient(create_app(store=MemoryStore())):
        pass


def test_cors_is_off_unless_configured() -> None:
    s = CloudSettings(tokens={GOOD: {"name": "a", "role": "viewer"}})
    origin = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(s, store=MemoryStore())) as c:
        r = c.options("/api/v1/fleet", headers=origin)
        assert "access-control-allow-origin" not in r.headers
    s = s.model_copy(update={"cors_origins": ["https://ops.example"]})
    with TestClient(create_app(s, store=MemoryStore())) as c:
        r = c.options("/api/v1/fleet", headers={**origin, "Origin": "https://ops.example"})
        assert r.headers["access-control-allow-origin"] == "https://ops.example"
