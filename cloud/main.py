"""The cloud app: JSON API under /api/v1, OpenAPI at /docs, the dashboard at /.

``create_app()`` builds the routes only; settings, the Store and the Registry are built in the
lifespan (or injected, for tests and the demo), never at import. ``cloud.main:app`` is the
default instance for ``uvicorn cloud.main:app``.

Insecure dev mode is loopback-only however the app is served: `_BindGuard` reads the address
the server binds from uvicorn's config when the lifespan starts, and the lifespan refuses to
start (`CloudSettings.check_bind`) on a non-loopback one; under any server, a request that
arrived on a non-loopback local address gets 403 in insecure dev mode.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from ipaddress import ip_address
from typing import Any, cast

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse

from cloud import dashboard
from cloud.api import docs
from cloud.api.deps import (
    RegistryLike,
    StoreLike,
    build_registry,
    build_store,
    get_settings,
    require_viewer,
)
from cloud.api.guard import Guard
from cloud.api.routes import (
    alerts,
    anomalies,
    fleet,
    health,
    live,
    model_health,
    models,
    rounds,
    window,
)
from cloud.influx import InfluxError
from cloud.settings import CloudSettings, is_loopback_host

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def _settings(app: FastAPI) -> CloudSettings:
    return cast(CloudSettings, app.dependency_overrides.get(get_settings, get_settings)())


def server_bind_host(receive: Any) -> str | None:
    """The host uvicorn binds, from the lifespan's ``receive`` (uvicorn's LifespanOn holds
    the server `uvicorn.Config`); ``unix`` for a Unix socket; None under another server."""
    config = getattr(getattr(receive, "__self__", None), "config", None)
    if config is None or not hasattr(config, "host"):
        return None
    if getattr(config, "uds", None):
        return "unix"
    fd = getattr(config, "fd", None)
    if fd is not None:
        with socket.socket(fileno=os.dup(fd)) as sock:
            name = sock.getsockname()
        return "unix" if isinstance(name, str | bytes) else str(name[0])
    return str(config.host)


class _BindGuard:
    """Outermost ASGI layer: records the bind host at startup; in insecure dev mode answers
    403 to a request whose local (server) address is a non-loopback IP."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            scope["app"].state.bind_host = server_bind_host(receive)
        elif scope["type"] in ("http", "websocket") and _off_loopback(scope):
            if getattr(scope["app"].state, "insecure_dev", False):
                await JSONResponse({"detail": "insecure dev mode serves loopback only"},
                                   403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _off_loopback(scope: Any) -> bool:
    host = (scope.get("server") or ("",))[0] or ""
    try:
        ip_address(str(host).strip("[]"))
    except ValueError:
        return False  # not an IP (a test client's "testserver", a Unix socket)
    return not is_loopback_host(str(host))


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = _settings(app)
    bind = getattr(app.state, "bind_host", None)
    if bind is not None:
        settings.check_bind(bind)  # InsecureBindError: the server refuses to start
    app.state.insecure_dev = settings.insecure_dev
    if settings.cors_origins and not app.state.cors:
        raise RuntimeError("cors_origins needs the settings passed to create_app(settings)")
    injected = app.state.injected
    with ExitStack() as stack:
        app.state.store = injected["store"] or build_store(settings, stack)
        if injected["registry"] is not None:
            app.state.registry, app.state.registry_error = injected["registry"], ""
        else:
            app.state.registry, app.state.registry_error = build_registry(settings)
        log.info("cloud api ready influx=%s db=%s registry=%s", settings.influx_url,
                 settings.influx_db, settings.registry_dir)
        yield
        alerter = getattr(app.state, "alerter", None)
        if alerter is not None:
            alerter.state.close()
            app.state.alerter = None


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    """InfluxDB down or failing: 503 (try later) or 502, details in the log, not the reply."""
    log.warning("storage error path=%s error=%r", request.url.path, str(exc))
    if isinstance(exc, InfluxError) and not exc.retryable:
        return JSONResponse({"detail": "storage query failed (see the server log)"}, 502)
    return JSONResponse({"detail": "storage unavailable: InfluxDB did not answer"}, 503)


def create_app(
    settings: CloudSettings | None = None,
    *,
    store: StoreLike | None = None,
    registry: RegistryLike | None = None,
) -> FastAPI:
    """The app; `settings`, `store` and `registry` replace what the lifespan would build."""
    app = FastAPI(
        title="fiberwatch cloud API",
        version="1",
        summary="Anomaly history, waterfalls, fleet, models and federated rounds.",
        lifespan=_lifespan,
        docs_url=None,  # cloud.api.docs serves /docs from local assets
        redoc_url=None,  # ReDoc only loads from a CDN
    )
    app.state.injected = {"store": store, "registry": registry}
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    # Every API route needs at least a viewer token; routes declare more with deps.needs().
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(require_viewer)])
    for module in (anomalies, window, fleet, models, rounds, health, alerts, live, model_health):
        api.include_router(module.router)
    app.include_router(health.open_router, prefix=API_PREFIX)
    app.include_router(api)
    app.add_exception_handler(InfluxError, _storage_error)
    app.state.settings_fn = lambda: _settings(app)
    # the token, then the body size, before any route reads or parses a body
    app.add_middleware(Guard, settings=app.state.settings_fn, prefix=API_PREFIX,
                       open_paths=frozenset({f"{API_PREFIX}/health"}))
    app.add_middleware(GZipMiddleware, minimum_size=2048, compresslevel=5)  # waterfalls
    app.state.cors = bool(settings and settings.cors_origins)
    if settings and settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    dashboard.mount(app)
    docs.mount(app)
    app.add_middleware(_BindGuard)  # added last: the outermost user middleware
    app.state.insecure_dev = bool(settings and settings.insecure_dev)
    return app


app = create_app()
