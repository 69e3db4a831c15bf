"""Limits every request meets before the app reads it: header size, body size, and
a bearer token for ``/v1``.

A plain ASGI middleware, so nothing here parses JSON or reads the body first:
a request whose ``Content-Length`` is over the limit is refused with 413 at
once, a body that turns out longer than the limit (chunked) is cut off with
413 as soon as it passes it, headers over :data:`MAX_HEADER_BYTES` get 431, and
a ``/v1`` request without a known token gets 401 without its body ever being
read. The numbers are in the errors.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from automation.auth import TokenRegistry

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Request headers, all of them together (uvicorn's h11 limit is the same).
MAX_HEADER_BYTES = 16 * 1024


class _TooLarge(HTTPException):
    """A body over the limit, found while it is read. An HTTPException, so that
    the app's body parser (which turns any other error into a 400) lets it
    through to the 413 handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


async def _reply(
    send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": []}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """The middleware.

    Args:
        app: The ASGI app.
        max_body_bytes: Largest body read (``LLM_ENDPOINTS_MAX_BODY_BYTES``).
        tokens: Returns the token registry (None before the app's start-up).
    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, tokens: Callable[[], TokenRegistry | None]
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if sum(len(k) + len(v) + 4 for k, v in raw) > MAX_HEADER_BYTES:
            await _reply(
                send,
                431,
                "headers_too_large",
                f"request headers are larger than the limit of {MAX_HEADER_BYTES} bytes",
                [],
            )
            return
        headers = dict(raw)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _reply(send, 413, "body_too_large", self._too_large(), [])
            return
        if scope.get("path", "").startswith("/v1/") and not self._authenticated(headers):
            await _reply(
                send,
                401,
                "unauthorized",
                "missing or unknown bearer token",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge(self.max_body)
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply(send, 413, "body_too_large", self._too_large(), [])

    def _too_large(self) -> str:
        return f"request body is larger than the limit of {self.max_body} bytes"

    def _authenticated(self, headers: dict[bytes, bytes]) -> bool:
        registry = self.tokens()
        if registry is None:
            return True  # not started yet: the route's own dependency answers
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and bool(token) and registry.lookup(token) is not None
