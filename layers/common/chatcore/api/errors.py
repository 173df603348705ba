"""The one place where errors become HTTP responses or in-stream error events."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatcore import errors
from chatcore.dynamodb import storage_failure


def error_response(exc: errors.ChatError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, errors.LimitExceededError):
        headers.update(exc.headers)
    if isinstance(exc, errors.UnauthorizedError):
        # RFC 6750: a bare challenge when no credentials were sent, `invalid_token` when they were bad.
        challenge = 'Bearer realm="chat"'
        if isinstance(exc, errors.InvalidCredentialsError):
            challenge += ', error="invalid_token"'
        headers["www-authenticate"] = challenge
    if exc.retry_after is not None and exc.status_code in (429, 503):
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
    status = exc.status_code
    if isinstance(exc, errors.ProviderError) and status >= 500:
        status = 503 if exc.retryable else 502
    return JSONResponse(exc.public_body(), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "Invalid request."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ChatError)
    async def _chat_error(_: Request, exc: errors.ChatError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        body = {"error": {"code": "invalid_request", "message": _validation_message(exc)}}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large"}.get(exc.status_code, "http_error")
        body = {"error": {"code": code, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        from chatcore.observability import get_logger

        get_logger().exception("unhandled error")
        body = {"error": {"code": "internal_error", "message": "An internal error occurred."}}
        return JSONResponse(body, status_code=500)


class StorageErrors:
    """ASGI middleware: an AWS SDK failure of the database (unreachable, throttled, table missing)
    raised before the response starts becomes a 503 `storage_unavailable` JSON answer.

    Handled here rather than by an exception handler so the connection stays usable (the catch-all
    handler re-raises after answering) and botocore is never imported just to name its classes.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            storage = storage_failure(exc)
            if storage is None or started:
                raise
            from chatcore.observability import get_logger

            get_logger().warning("storage unavailable", extra={"error": type(exc).__name__})
            await error_response(storage)(scope, receive, send)
