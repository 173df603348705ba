"""A DynamoDB client for limits and API keys: created on first use (never at import), then reused.

Short timeouts and few retries, because this sits on the critical path before the first token:
a slow DynamoDB must turn into a quick, documented fail-open or 503, not a hung request.
(`chatcore.store` may grow a shared client; this one can then delegate to it.)
"""

from __future__ import annotations

import threading
from typing import Any

from chatcore.settings import Settings

_clients: dict[tuple[str, str | None], Any] = {}
_lock = threading.Lock()


def dynamodb_client(settings: Settings) -> Any:
    """The process-wide boto3 DynamoDB client for these settings (thread-safe, lazily created)."""
    key = (settings.aws_region, settings.dynamodb_endpoint_url)
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=2, read_timeout=3, max_pool_connections=50,
                            retries={"mode": "standard", "max_attempts": 2})
            client = boto3.session.Session().client("dynamodb", region_name=settings.aws_region,
                                                    endpoint_url=settings.dynamodb_endpoint_url, config=config)
            _clients[key] = client
    return client


def is_condition_failure(exc: BaseException) -> bool:
    """True for a failed ConditionExpression (an answer, not an outage)."""
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
