"""What the Lambda Web Adapter tells the app about the invocation behind a request."""

from __future__ import annotations

import json
import time
import uuid

from starlette.requests import HTTPConnection


def lambda_context(request: HTTPConnection) -> dict[str, object]:
    """The Lambda context the Web Adapter forwards as a JSON header (empty outside Lambda)."""
    raw = request.headers.get("x-amzn-lambda-context")
    if not raw:
        return {}
    try:
        context = json.loads(raw)
    except ValueError:
        return {}
    return context if isinstance(context, dict) else {}


def lambda_deadline_s(request: HTTPConnection) -> float | None:
    """Seconds left in this Lambda invocation, from the Web Adapter's context header."""
    try:
        deadline_ms = float(lambda_context(request)["deadline"])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None
    return max(deadline_ms / 1000.0 - time.time(), 0.0)


def request_id(request: HTTPConnection) -> str:
    """The Lambda request id when there is one, else a fresh id: it names the request in logs."""
    value = lambda_context(request).get("request_id")
    return value if isinstance(value, str) and value else uuid.uuid4().hex
