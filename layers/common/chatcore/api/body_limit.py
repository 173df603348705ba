"""Request body size limit, enforced while the body is read (pure ASGI middleware).

A `Content-Length` over the limit is refused before any byte is read; a body without one (chunked)
is counted as it arrives and refused as soon as it passes the limit, so an oversized body is never
buffered whole. Either way the client gets 413 with a JSON error and `connection: close`.

Before that answer, the rest of the body is read and discarded, up to a bound (`DRAIN_MAX_BYTES`, at
most `DRAIN_MAX_S` of reading): a client that writes its whole body before reading the response
(Python's `http.client`, many proxies) would otherwise have its connection reset under it and never
see the 413. A body longer than the bound may still be cut off.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatcore.api.errors import error_body
from chatcore.errors import PayloadTooLargeError

DRAIN_MAX_BYTES = 32 * 1024 * 1024  # the most of a refused body read (and discarded) before answering
DRAIN_MAX_S = 2.0  # and the longest time spent reading it


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """`max_bytes` for every path, except the paths in `path_limits` (exact match) with their own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        path = str(scope.get("path", ""))
        limit = self.path_limits.get(path.rstrip("/") or "/", self.max_bytes)
        if declared is not None and declared > limit:
            await _drain(receive, declared)
            await self._reject(send, path, limit)
            return

        received = 0
        exceeded = False
        more_body = True
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded, more_body
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more_body = bool(message.get("more_body", False))
                if received > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded:
                return  # whatever the app answered to the aborted read, the client gets our 413
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # Frameworks may wrap the aborted read in their own error; it is ours if we aborted.
            if not exceeded:
                raise
        if exceeded and not response_started:
            if more_body:
                await _drain(receive, DRAIN_MAX_BYTES - received)
            await self._reject(send, path, limit)

    async def _reject(self, send: Send, path: str, limit: int) -> None:
        error = PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
        body = json.dumps(error_body(error, 413, path)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, expected: int) -> None:
    """Read and discard the rest of a refused body: until it ends, the client leaves, `expected`
    (or `DRAIN_MAX_BYTES`) bytes were read, or `DRAIN_MAX_S` passed."""
    budget = min(expected, DRAIN_MAX_BYTES)
    drained = 0
    try:
        async with asyncio.timeout(DRAIN_MAX_S):
            while drained < budget:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client disconnected
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
