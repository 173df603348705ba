"""The DynamoDB clients of this process: created on first use (never at import), then reused.

Two profiles. `critical` is for calls that sit before the first token and have a documented
fallback (limits fail open or answer 503, the breaker assumes closed): short timeouts and few
retries, so a slow DynamoDB becomes a quick decision instead of a hung request. The default
profile is for conversation storage, where a retry is worth more than a fast failure.
"""

from __future__ import annotations

import threading
from typing import Any

from chatcore import errors
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


# Error codes that mean the table cannot serve right now (after the SDK's own retries).
_UNAVAILABLE_CODES = {
    "ProvisionedThroughputExceededException": 1.0, "ThrottlingException": 1.0, "RequestLimitExceeded": 1.0,
    "InternalServerError": 1.0, "ServiceUnavailable": 1.0, "LimitExceededException": 1.0,
    "TransactionInProgressException": 1.0,
}


def storage_failure(exc: BaseException) -> errors.StorageUnavailableError | None:
    """The `StorageUnavailableError` an AWS SDK exception amounts to, or None if it is not one.

    Unreachable endpoints and timeouts, throttling after retries, 5xx, and a missing table are
    outages the client can do nothing about but wait: a 503 (`storage_unavailable`), never a 500.
    """
    module = type(exc).__module__
    if not (module.startswith("botocore") or module.startswith("boto3")):
        return None
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""
    if code == "ResourceNotFoundException":
        return errors.StorageUnavailableError(
            "The conversation storage is not set up (its table does not exist).", retry_after=None)
    if code and code not in _UNAVAILABLE_CODES:
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) if isinstance(response, dict) else 0
        if not isinstance(status, int) or status < 500:
            return None  # a request this code got wrong: a bug, reported as one
    return errors.StorageUnavailableError("The conversation storage is unavailable right now; try again shortly.",
                                          retry_after=_UNAVAILABLE_CODES.get(code, 2.0))
