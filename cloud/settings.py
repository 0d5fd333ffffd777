"""`CloudSettings`: the cloud API process's configuration (env prefix ``FIBERWATCH_CLOUD_``).

Built once per process (in the app's lifespan through `cloud.api.deps.get_settings`, or by
``fiberwatch cloud serve`` from its flags), never at import. Validation rejects insecure
set-ups (no API tokens, short or well-known tokens, a wildcard CORS origin, a remote InfluxDB
without credentials) unless ``insecure_dev`` is set explicitly.

API tokens come from ``tokens`` (env ``FIBERWATCH_CLOUD_TOKENS`` as JSON) and/or a
``tokens_file`` (TOML or JSON), both a mapping of token to ``{name, role}``::

    "3q0c...long random..." = { name = "alice", role = "admin" }
    "sha256:9f86d08..."     = { name = "ops-bot", role = "operator" }   # stored as a hash

A key ``sha256:<hex>`` holds the SHA-256 of the token instead of the token itself.

``insecure_dev`` (a well-known admin token) is a loopback-only mode: the settings refuse it
together with a non-loopback ``bind_host`` (env ``FIBERWATCH_CLOUD_BIND_HOST``, set by
``fiberwatch cloud serve --host``), and the app checks the address the server really binds
(`check_bind`, from uvicorn's config at startup, `cloud.main`), so ``uvicorn cloud.main:app
--host 0.0.0.0`` with ``FIBERWATCH_CLOUD_INSECURE_DEV=true`` refuses to start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tomllib
from ipaddress import ip_address
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

Role = Literal["viewer", "operator", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 0, "operator": 1, "admin": 2}
MIN_TOKEN_LENGTH = 20
DEV_TOKEN = "fiberwatch-dev"  # noqa: S105 - only ever accepted with insecure_dev
_WEAK_TOKENS = {"changeme", "secret", "token", "password", "admin", DEV_TOKEN}


class TokenInfo(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _is_loopback(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    """``localhost``, a loopback IP (127.0.0.0/8, ::1) or ``unix`` (a Unix socket)."""
    h = host.strip().strip("[]").lower()
    if h in ("localhost", "unix"):
        return True
    try:
        return ip_address(h).is_loopback
    except ValueError:
        return False


class InsecureBindError(ValueError):
    """insecure_dev on a non-loopback address."""


def load_tokens_file(path: Path) -> dict[str, TokenInfo]:
    """Read a TOML or JSON tokens file (mapping token -> {name, role})."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read tokens file {path}: {exc.strerror}") from exc
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ValueError(f"tokens file {path} is not valid {kind}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"tokens file {path} must map token -> {{name, role}}")
    return {str(k): TokenInfo.model_validate(v) for k, v in raw.items()}


class CloudSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIBERWATCH_CLOUD_", extra="forbid")

    influx_url: str = "http://127.0.0.1:8086"
    influx_db: str = "fiberwatch"
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    influx_timeout_s: float = Field(default=5.0, gt=0, le=120)
    registry_dir: Path | None = None
    model_public_key: Path | None = None  # verifies packages before a promotion (registry)
    tokens_file: Path | None = None
    tokens: dict[str, TokenInfo] = Field(default_factory=dict)
    insecure_dev: bool = False
    bind_host: str | None = None  # the address the server binds (checked with insecure_dev)
    cors_origins: list[str] = Field(default_factory=list)  # CORS is off when empty
    anomalies_max_limit: int = Field(default=1000, ge=1, le=1000)
    window_max_channels: int = Field(default=16384, ge=1)
    window_max_span_s: float = Field(default=7 * 86400.0, gt=0)
    window_max_times: int = Field(default=5000, ge=1, le=5000)
    window_default_times: int = Field(default=600, ge=1, le=5000)
    stale_after_s: float = Field(default=30.0, gt=0)  # /health: ingestion is stale past this
    alerting_config: Path | None = None  # alert rules TOML: its state_db backs /alerts
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)  # larger request bodies: 413
    heavy_max_concurrent: int = Field(default=4, ge=1)  # waterfalls/searches at once, else 429
    window_max_cells: int = Field(default=4_000_000, ge=1)  # channel groups x time buckets
    anomalies_default_span_s: float = Field(default=366 * 86400.0, gt=0)  # without `start`
    anomalies_max_span_s: float = Field(default=366 * 86400.0, gt=0)

    _token_index: dict[str, TokenInfo] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> CloudSettings:
        tokens = dict(self.tokens)
        if self.tokens_file is not None:
            tokens.update(load_tokens_file(self.tokens_file))
        if self.bind_host is not None:
            self.check_bind(self.bind_host)
        problems = self._insecurities(tokens)
        if problems and not self.insecure_dev:
            raise ValueError("; ".join(problems) + " (or set insecure_dev for local development)")
        for p in problems:
            log.warning("insecure_dev=true accepts: %s", p)
        if not tokens and self.insecure_dev:
            tokens[DEV_TOKEN] = TokenInfo(name="dev", role="admin")
        self._token_index = {
            k.removeprefix("sha256:").lower() if k.startswith("sha256:") else token_digest(k): v
            for k, v in tokens.items()
        }
        return self

    def _insecurities(self, tokens: dict[str, TokenInfo]) -> list[str]:
        problems = []
        if not tokens:
            problems.append("no API tokens configured (set tokens_file or tokens)")
        for token in tokens:
            if token.startswith("sha256:"):
                continue
            if len(token) < MIN_TOKEN_LENGTH or token.lower() in _WEAK_TOKENS:
                problems.append(
                    f"token for {tokens[token].name!r} is weak "
                    f"(use at least {MIN_TOKEN_LENGTH} random characters)"
                )
        if "*" in self.cors_origins:
            problems.append("CORS origin '*' allows any web page to call the API")
        if self.influx_username and self.influx_password is None:
            problems.append("influx_username set without influx_password")
        if not _is_loopback(self.influx_url) and not self.influx_username:
            problems.append(f"InfluxDB at {self.influx_url} is off loopback without credentials")
        return problems

    def check_bind(self, host: str) -> None:
        """`InsecureBindError` if insecure_dev would serve on a non-loopback ``host``."""
        if self.insecure_dev and not is_loopback_host(host):
            raise InsecureBindError(
                f"insecure_dev (well-known dev admin token) refuses to bind to {host!r}: "
                "loopback only (127.0.0.1, ::1); configure real tokens to serve on a network")

    def principal_for(self, token: str) -> TokenInfo | None:
        """The token's owner and role, or None; looked up by SHA-256 digest."""
        return self._token_index.get(token_digest(token))
