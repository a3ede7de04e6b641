"""What stands before every route: the API key check, the body size bound, and per-request metrics.

:class:`Guard` is a plain ASGI middleware: it checks the key first (every path but ``/health``; 401),
then reads a request body up to ``max_body_bytes`` (a larger ``Content-Length`` or a longer chunked body
gets a 413 at once, before any parsing) and times every response into
:class:`~user_embed.serving.metrics.Metrics`, streams included (until their last byte).
"""

from __future__ import annotations

import hmac
import json
import re
import time

from user_embed.serving.errors import error_body

ROUTE_TEMPLATES = ((re.compile(r"^/v1/users/[^/]+/events$"), "/v1/users/{user_id}/events"),
                   (re.compile(r"^/v1/users/[^/]+/embedding$"), "/v1/users/{user_id}/embedding"),
                   (re.compile(r"^/v1/models/[^/]+$"), "/v1/models/{model}"))
KNOWN_ROUTES = {"/health", "/metrics", "/v1/models", "/v1/chat/completions"}


def route_label(path: str) -> str:
    """The route a path belongs to (ids replaced by their placeholder), or ``other``."""
    if path in KNOWN_ROUTES:
        return path
    for pattern, template in ROUTE_TEMPLATES:
        if pattern.match(path):
            return template
    return "other"


def key_error(api_key: str | None, headers: dict[bytes, bytes]) -> tuple[str, str] | None:
    """(message, code) when a key is set and the request's ``Authorization: Bearer <key>`` is missing or wrong."""
    if api_key is None:
        return None
    header = headers.get(b"authorization", b"").decode("latin-1")
    if not header:
        return "missing API key: send the header `Authorization: Bearer <key>`", "missing_api_key"
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        return "incorrect API key", "invalid_api_key"
    return None


class Guard:
    """ASGI middleware: 401 without the API key (but on /health), 413 for bodies above ``limit`` bytes; every
    response timed into ``metrics``."""

    def __init__(self, app, limit: int, metrics, api_key: str | None = None):
        self.app, self.limit, self.metrics, self.api_key = app, limit, metrics, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]
        route = route_label(scope.get("path", ""))

        async def timed_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.request(route, status[0], time.perf_counter() - start)

        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        refused = key_error(self.api_key, headers) if scope.get("path") != "/health" else None
        if refused:
            await self._refuse(timed_send, 401, *refused, extra=[(b"www-authenticate", b"Bearer")])
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(timed_send, 413, f"request body too large: at most {self.limit} bytes", "body_too_large")
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                await self._refuse(timed_send, 413, f"request body too large: at most {self.limit} bytes",
                                   "body_too_large")
                return
        body, replayed = b"".join(chunks), [False]

        async def replay():
            if not replayed[0]:
                replayed[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, timed_send)

    async def _refuse(self, send, status: int, message: str, code: str, extra: list | None = None) -> None:
        payload = json.dumps(error_body(status, message, code=code)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": payload})
