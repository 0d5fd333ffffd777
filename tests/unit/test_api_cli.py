"""`fiberwatch cloud serve`: bad flags and insecure settings are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiberwatch import cli


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("FIBERWATCH_CLOUD_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(("argv", "message"), [
    ([], "Value error, no API tokens configured"),
    (["--tokens", "/nonexistent/tokens.toml"], "cannot read tokens file /nonexistent"),
    (["--insecure-dev", "--host", "0.0.0.0"], "refuses to bind to '0.0.0.0'"),
    (["--insecure-dev", "--port", "70000"], "--port 70000 is not a TCP port"),
])
def test_serve_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert cli.main(["cloud", "serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fiberwatch cloud: error: ") and message in err
    assert err.count("\n") == 1


def test_weak_token_in_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tokens = tmp_path / "t.toml"
    tokens.write_text('"short" = { name = "al", role = "admin" }\n')
    assert cli.main(["cloud", "serve", "--tokens", str(tokens)]) == 2
    assert "token for 'al' is weak" in capsys.readouterr().err
