"""What every request passes before a route sees it: the token, then the body size; and the
cap on concurrent heavy queries.

`Guard` is plain ASGI, outside FastAPI's routing, so an API request without a valid token
gets 401 before a byte of its body is read or parsed (invalid JSON without a token is 401,
not 422), and a body above ``max_body_bytes`` gets 413 (from its Content-Length at once,
or as soon as a chunked body passes the limit) before anything parses it. Roles are still
checked by each route's dependencies (`cloud.api.deps.needs`).

`heavy_slot` is a route dependency: at most ``heavy_max_concurrent`` waterfalls and event
searches run at once; one more gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import HTTPException, Request

from cloud.settings import CloudSettings

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]


async def _reply(send: Send, status: int, detail: str,
                 headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None


class Guard:
    """ASGI middleware: authenticate `/api/...` requests, then cap their body size.

    Parameters
    ----------
    app : ASGI app
    settings : callable
        Returns the `CloudSettings` in force (tokens and ``max_body_bytes``).
    prefix : str
        Paths under it need a token, except `open_paths`.
    """

    def __init__(self, app: Any, settings: Callable[[], CloudSettings], prefix: str,
                 open_paths: frozenset[str]) -> None:
        self.app, self._settings, self.prefix, self.open_paths = app, settings, prefix, open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self._settings()
        path = scope.get("path", "")
        if path.startswith(self.prefix) and path not in self.open_paths \
                and scope.get("method") != "OPTIONS":
            refused = _unauthenticated(scope, settings)
            if refused:
                await _reply(send, 401, refused, {"WWW-Authenticate": "Bearer"})
                return
        limit = settings.max_body_bytes
        length = _header(scope, b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            await _reply(send, 413, f"request body over {limit} bytes")
            return
        await self.app(scope, _capped(receive, limit), send)


def _unauthenticated(scope: Scope, settings: CloudSettings) -> str:
    """Why the request's token is refused ('' if it is a known token), as `deps` says it."""
    scheme, _, token = (_header(scope, b"authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "missing bearer token (send 'Authorization: Bearer <token>')"
    return "" if settings.principal_for(token.strip()) is not None else "invalid token"


def _capped(receive: Receive, limit: int) -> Receive:
    """`receive` that stops a chunked body past `limit` with 413 (FastAPI passes an
    HTTPException raised while reading the body on as it is)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message: Message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, f"request body over {limit} bytes")
        return message

    return wrapped


def heavy_slot(request: Request) -> Iterator[None]:
    """Hold one of the app's heavy-query slots for the request; 429 if none is free."""
    state = request.app.state
    sem = getattr(state, "heavy", None)
    if sem is None:
        with _CREATE:
            sem = getattr(state, "heavy", None)
            if sem is None:
                settings: CloudSettings = state.settings_fn()
                sem = state.heavy = threading.BoundedSemaphore(settings.heavy_max_concurrent)
    if not sem.acquire(blocking=False):
        raise HTTPException(429, "too many heavy queries at once: retry shortly",
                            headers={"Retry-After": "1"})
    try:
        yield
    finally:
        sem.release()


_CREATE = threading.Lock()
