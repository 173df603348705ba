"""Health function: EventBridge Scheduler events probe every deployment; Function URL requests get `GET /health`.

All logic lives in `chatcore.service.health`; this module only tells the two event kinds apart and
builds everything on first use (nothing slow at import).
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any

from chatcore.api.health_routes import create_health_app
from chatcore.observability import get_logger
from chatcore.providers import ProviderRegistry
from chatcore.routing.router import Router
from chatcore.service.health import HealthService, health_store
from chatcore.settings import get_settings


@lru_cache(maxsize=1)
def service() -> HealthService:
    settings = get_settings()
    return HealthService(Router(settings, ProviderRegistry(settings)), health_store(settings))


@lru_cache(maxsize=1)
def http_handler() -> Any:
    from mangum import Mangum

    return Mangum(create_health_app(service()), lifespan="off")


def is_http_event(event: dict[str, Any]) -> bool:
    """A Function URL (or API Gateway HTTP API) request, as opposed to a scheduled event."""
    return isinstance(event.get("requestContext"), dict) and "http" in event["requestContext"]


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    get_logger("health").append_keys(request_id=getattr(context, "aws_request_id", None))
    if is_http_event(event):
        return http_handler()(event, context)  # type: ignore[no-any-return]
    records = asyncio.run(service().probe())
    down = sorted({r.provider for r in records if r.status == "down"})
    return {"probed": len(records), "providersDown": down}
