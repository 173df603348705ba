"""The DynamoDB client of this process: created on first use, then reused by every call.

Creating a boto3 client costs tens of milliseconds, so it never happens at import time (cold start)
and happens once per endpoint and region, not per request.
"""

from __future__ import annotations

import threading
from typing import Any

from chatcore.settings import Settings

_clients: dict[tuple[str | None, str], Any] = {}
_lock = threading.Lock()


def dynamodb_client(settings: Settings) -> Any:
    """The low-level DynamoDB client for `settings` (honours `DYNAMODB_ENDPOINT_URL` and the region)."""
    key = (settings.dynamodb_endpoint_url, settings.aws_region)
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:  # boto3 sessions are not thread-safe to create from; one creator at a time
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": 4},
                connect_timeout=3,
                read_timeout=10,
                max_pool_connections=32,
                tcp_keepalive=True,
            )
            client = boto3.session.Session().client(
                "dynamodb", region_name=settings.aws_region, endpoint_url=settings.dynamodb_endpoint_url,
                config=config)
            _clients[key] = client
    return client
