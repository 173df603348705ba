"""The one place where errors become HTTP responses or in-stream error events."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatcore import errors
from chatcore.dynamodb import storage_failure
from chatcore.events import ErrorEvent

OPENAI_PREFIX = "/v1/"  # the OpenAI-compatible API answers errors in OpenAI's shape

# OpenAI's error `type` per status (the SDKs pick their exception class from the status).
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
                 429: "rate_limit_error"}


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX)


def openai_error_body(message: str, status: int, code: str | None, param: str | None = None) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}`, as the OpenAI API and its SDKs have it."""
    etype = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if code == errors.QuotaExhaustedError.code:
        etype = "insufficient_quota"
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def error_body(exc: errors.ChatError, status: int, path: str) -> dict[str, Any]:
    """The JSON body of an error response, in the shape of the API the path belongs to."""
    if not is_openai_path(path):
        return exc.public_body()
    code = "model_not_found" if isinstance(exc, errors.UnknownModelError) else exc.code
    param = exc.details.get("param")
    if param is None and isinstance(exc, errors.UnknownModelError | errors.ModelNotFoundError):
        param = "model"
    return openai_error_body(exc.message, status, code, param if isinstance(param, str) else None)


def error_response(exc: errors.ChatError, path: str = "") -> JSONResponse:
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
    if isinstance(exc, errors.UnknownModelError) and is_openai_path(path):
        status = 404  # OpenAI's answer to a model that does not exist
    return JSONResponse(error_body(exc, status, path), status_code=status, headers=headers)


def stream_failure_status(event: ErrorEvent) -> int:
    """The status of a failure after the first token when the answer is not streamed (and so a status
    can still be sent): the upstream failed, 503 when a retry may help, else 502."""
    return 503 if event.retryable else 502


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "Invalid request."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ChatError)
    async def _chat_error(request: Request, exc: errors.ChatError) -> JSONResponse:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = _validation_message(exc)
        if is_openai_path(request.url.path):
            first = exc.errors()[0] if exc.errors() else {}
            param = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
            return JSONResponse(openai_error_body(message, 400, "invalid_request", param), status_code=400)
        body = {"error": {"code": "invalid_request", "message": message}}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large"}.get(exc.status_code, "http_error")
        if is_openai_path(request.url.path):
            body = openai_error_body(str(exc.detail), exc.status_code, code)
        else:
            body = {"error": {"code": code, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        from chatcore.observability import get_logger

        get_logger().exception("unhandled error")
        message = "An internal error occurred."
        if is_openai_path(request.url.path):
            return JSONResponse(openai_error_body(message, 500, "internal_error"), status_code=500)
        body = {"error": {"code": "internal_error", "message": message}}
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
