"""Dependencies: settings, the event/feature Store, the model Registry and the caller's identity.

`get_settings` is cached and overridable (``app.dependency_overrides[get_settings]``); the
Store and the Registry are built in the app's lifespan (`cloud.main`) and live on
``app.state``. The Registry comes from `federation.registry.store`, imported only when a registry
directory is configured, so the API starts without torch.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Protocol, cast, get_args

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud.settings import ROLE_RANK, CloudSettings, Role

log = logging.getLogger(__name__)


@lru_cache
def get_settings() -> CloudSettings:
    return CloudSettings()


SettingsDep = Annotated[CloudSettings, Depends(get_settings)]


class StoreLike(Protocol):
    """What the API needs of `cloud.store.Store`."""

    def anomalies(
        self, *, site: str | None = None, gateway: str | None = None, stream: str | None = None,
        start_ns: int | None = None, end_ns: int | None = None, ch_min: int | None = None,
        ch_max: int | None = None, dist_min: float | None = None, dist_max: float | None = None,
        severity: str | None = None, class_hint: str | None = None,
        model_version: str | None = None, limit: int = 100, offset: int = 0,
    ) -> list[dict[str, Any]]: ...
    def anomaly(self, event_id: str) -> dict[str, Any] | None: ...
    def window(
        self, *, site: str, gateway: str | None, stream: str, start_ns: int, end_ns: int,
        ch_start: int, ch_end: int, max_times: int = 2000, field: str = "score",
        max_cells: int = 20_000_000,
    ) -> dict[str, Any]: ...
    def fleet(self) -> list[dict[str, Any]]: ...
    def rounds(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def add_label(self, event_id: str, *, label: str, note: str, user: str,
                  kind: str = "") -> dict[str, Any]: ...
    def labels(self, event_id: str) -> list[dict[str, Any]]: ...
    def ingest_status(self) -> list[dict[str, Any]]: ...
    def ping(self) -> bool: ...


class ModelRecordLike(Protocol):
    version: str
    state: str

    def to_dict(self) -> dict[str, Any]: ...


class RegistryLike(Protocol):
    """What the API needs of `federation.registry.store.Registry`."""

    def list(self) -> Sequence[ModelRecordLike]: ...
    def get(self, version: str) -> ModelRecordLike: ...
    def promote(self, version: str, *, to: str, reason: str = "",
                actor: str = "") -> ModelRecordLike: ...
    def rollback(self, *, reason: str = "", actor: str = "") -> ModelRecordLike: ...
    def production(self) -> ModelRecordLike | None: ...
    def history(self) -> builtins.list[dict[str, Any]]: ...


def build_store(settings: CloudSettings, stack: ExitStack) -> StoreLike:
    """The real Store; its InfluxDB connection pool closes with `stack`."""
    from cloud.influx import InfluxClient
    from cloud.store import Store

    password = settings.influx_password.get_secret_value() if settings.influx_password else None
    client = stack.enter_context(InfluxClient(
        settings.influx_url, username=settings.influx_username, password=password,
        timeout=settings.influx_timeout_s))
    return Store(client, db=settings.influx_db)


def build_registry(settings: CloudSettings) -> tuple[RegistryLike | None, str]:
    """The registry, or None and the reason the model endpoints will give (503)."""
    if settings.registry_dir is None:
        return None, "no model registry configured (FIBERWATCH_CLOUD_REGISTRY_DIR or --registry)"
    try:
        from federation.registry.store import Registry
    except ImportError as exc:
        log.warning("model registry unavailable error=%r", str(exc))
        return None, f"model registry unavailable: {exc}"
    key = None
    if settings.model_public_key is not None:
        try:
            key = settings.model_public_key.read_bytes()
        except OSError as exc:
            return None, f"model public key {settings.model_public_key}: {exc.strerror}"
    # without a key the registry lists models but refuses to promote to canary/production
    return Registry(settings.registry_dir, public_key=key), ""


def get_store(request: Request) -> StoreLike:
    return cast(StoreLike, request.app.state.store)


def get_registry(request: Request) -> RegistryLike:
    registry = request.app.state.registry
    if registry is None:
        raise HTTPException(503, request.app.state.registry_error)
    return cast(RegistryLike, registry)


StoreDep = Annotated[StoreLike, Depends(get_store)]
RegistryDep = Annotated[RegistryLike, Depends(get_registry)]

# --- authentication and roles -------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="API token: `Authorization: Bearer <token>`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role


def current_principal(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise HTTPException(401, "missing bearer token (send 'Authorization: Bearer <token>')",
                            headers=_CHALLENGE)
    info = settings.principal_for(credentials.credentials)
    if info is None:
        log.info("rejected token reason=unknown")
        raise HTTPException(401, "invalid token", headers=_CHALLENGE)
    return Principal(info.name, info.role)


CurrentUser = Annotated[Principal, Depends(current_principal)]


def _role_check(role: Role) -> Any:
    def check(user: CurrentUser) -> Principal:
        if ROLE_RANK[user.role] < ROLE_RANK[role]:
            raise HTTPException(403, f"role {user.role!r} is not allowed: needs {role!r} or higher")
        return user

    check.__name__ = f"require_{role}"
    return check


_CHECKS: dict[str, Any] = {role: _role_check(role) for role in get_args(Role)}
require_viewer = _CHECKS["viewer"]


def needs(role: Role) -> dict[str, Any]:
    """Route keyword arguments: the role check and its OpenAPI declaration, which can't drift."""
    return {
        "dependencies": [Depends(_CHECKS[role])],
        "openapi_extra": {"x-required-role": role},
    }
