"""What the service refuses before it does any work: bodies over the size limit, admin calls without the right token.

Refusals take the error shape of their route: TF Serving's ``{"error": message}`` on its routes
(``/v1/models/...``, whose clients expect it), FastAPI's ``{"detail": message}`` elsewhere.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Header, HTTPException
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from core.config import ServingConfig

TF_SERVING_PREFIX = "/v1/models/"


def error_response(path: str, status: int, message: str) -> JSONResponse:
    """A refusal of a request to ``path`` in that route's error shape."""
    key = "error" if path.startswith(TF_SERVING_PREFIX) else "detail"
    return JSONResponse({key: message}, status_code=status)


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 before the app reads it.

    A declared ``Content-Length`` over the limit is refused unread; otherwise the body is read up to
    the limit (a chunked body declares no length) and handed on whole.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        declared_too_large = declared is not None and int(declared) > self.max_bytes
        try:
            body = None if declared_too_large else await self._read(receive)
        except ClientDisconnect:  # nobody is left to answer
            return
        if body is None:
            message = f"request body over {self.max_bytes} bytes"
            await error_response(scope["path"], 413, message)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` as one message, then whatever the client sends next (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def is_loopback(host: str) -> bool:
    """Whether a service bound to ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def admin_guard(cfg: ServingConfig) -> Callable[..., Any]:
    """A FastAPI dependency for the ``/admin/*`` routes.

    With ``cfg.admin_token`` set, a request needs ``Authorization: Bearer <token>`` (401 otherwise).
    Without one, admin routes answer only when the service is bound to a loopback host (403 otherwise):
    anyone who can reach a public bind could swap the live bundle.
    """
    token = cfg.admin_token.get_secret_value().encode() if cfg.admin_token is not None else None
    open_locally = is_loopback(cfg.host)

    def check(authorization: str | None = Header(default=None)) -> None:
        if token is None:
            if not open_locally:
                raise HTTPException(403, detail="admin routes need serving.admin_token on a non-loopback host")
            return
        scheme, _, given = (authorization or "").partition(" ")
        # compare_digest takes as long for any wrong token: its time tells nothing of the right one
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise HTTPException(401, detail="a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    return check
