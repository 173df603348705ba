"""The DynamoDB clients of this process: created on first use (never at import), then reused.

Two profiles. `critical` is for calls that sit before the first token and have a documented
fallback (limits fail open or answer 503, the breaker assumes closed): short timeouts and few
retries, so a slow DynamoDB becomes a quick decision instead of a hung request. The default
profile is for conversation storage, where a retry is worth more than a fast failure.
"""

from __future__ import annotations

import threading
from typing import Any

from chatcore.settings import Settings

_clients: dict[tuple[str, str | None, bool], Any] = {}
_lock = threading.Lock()


def dynamodb_client(region: str, endpoint_url: str | None, *, critical: bool = False) -> Any:
    """The process-wide low-level boto3 DynamoDB client for this region, endpoint and profile."""
    key = (region, endpoint_url, critical)
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:  # boto3 sessions are not thread-safe to create from: one creator at a time
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            if critical:
                config = Config(connect_timeout=2, read_timeout=3, max_pool_connections=50,
                                retries={"mode": "standard", "max_attempts": 2}, tcp_keepalive=True)
            else:
                config = Config(connect_timeout=3, read_timeout=10, max_pool_connections=32,
                                retries={"mode": "standard", "max_attempts": 4}, tcp_keepalive=True)
            client = boto3.session.Session().client("dynamodb", region_name=region, endpoint_url=endpoint_url,
                                                    config=config)
            _clients[key] = client
    return client


def client_for(settings: Settings, *, critical: bool = False) -> Any:
    """`dynamodb_client` for the region and endpoint in `settings` (`DYNAMODB_ENDPOINT_URL`)."""
    return dynamodb_client(settings.aws_region, settings.dynamodb_endpoint_url, critical=critical)


def is_condition_failure(exc: BaseException) -> bool:
    """True for a failed ConditionExpression (an answer, not an outage)."""
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
