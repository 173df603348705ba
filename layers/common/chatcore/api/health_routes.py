"""The health function's HTTP face: `GET /health` (buffered, served through Mangum)."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from chatcore import errors
from chatcore.api.errors import install_error_handlers
from chatcore.principal import bearer_token
from chatcore.service.health import HealthService
from chatcore.settings import Settings


def check_probe_token(settings: Settings, request: Request) -> None:
    """Live probing needs `Authorization: Bearer <HEALTH_PROBE_TOKEN>`; without a token set it is off."""
    if not settings.health_probe_token:
        raise errors.ForbiddenError("Live probing is disabled: set HEALTH_PROBE_TOKEN to enable ?probe=true.")
    token = bearer_token(request.headers)
    if token is None or not hmac.compare_digest(token.encode(), settings.health_probe_token.encode()):
        raise errors.UnauthorizedError("?probe=true needs a valid bearer token.")


def create_health_app(service: HealthService) -> FastAPI:
    """The buffered `GET /health` app (served through Mangum by the health function)."""
    app = FastAPI(title="Chat backend health", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    @app.get("/health")
    async def health(request: Request, probe: bool = False) -> JSONResponse:
        """Healthy, degraded or down, per provider and deployment, with breaker states."""
        if probe:
            check_probe_token(service.router.settings, request)
            await service.probe()
        overall, body = await service.report()
        return JSONResponse(body, status_code=503 if overall == "down" else 200,
                            headers={"cache-control": "no-store"})

    return app
