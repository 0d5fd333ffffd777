"""schemathesis over every route of the API (sample data in memory), with tokens of each
role, an invalid token and none: no input gives a 5xx. `fiberwatch bench chaos` runs the
same against the real stack with >= 5,000 requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_api_alerts import CONFIG as ALERTING_CONFIG

pytestmark = pytest.mark.slow


def test_no_request_gives_a_5xx(tmp_path: Path) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from fastapi.testclient import TestClient

    from cloud.api.sample import sample_registry, sample_store
    from cloud.main import create_app
    from cloud.settings import CloudSettings, TokenInfo
    from fiberwatch.bench._chaos_api import fuzz

    tokens = {r: f"{r}-token-0123456789abcdef" for r in ("viewer", "operator", "admin")}
    alerting = tmp_path / "alerts.toml"  # configured: unconfigured parts answer 503 by design
    alerting.write_text(ALERTING_CONFIG.format(db=tmp_path / "alerts.sqlite"))
    settings = CloudSettings(tokens={t: TokenInfo(name=r, role=r) for r, t in tokens.items()},
                             alerting_config=alerting)
    app = create_app(settings, store=sample_store(minutes=5), registry=sample_registry())
    with TestClient(app):
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        result = fuzz(schema, [tokens["admin"], tokens["viewer"], "not-a-token-0123456789", None],
                      examples=12)
    assert result.operations >= 12 and result.requests >= 1000
    assert result.by_status[200] > 0 and result.by_status[401] > 0
    assert result.status_5xx == 0, result.failures
    assert result.failures == []
