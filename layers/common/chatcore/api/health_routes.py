"""The health function's HTTP face: `GET /health` (buffered, served through Mangum)."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from chatcore import errors
from chatcore.api.errors import install_error_handlers
from chatcore.principal import bearer_token
from chatcore.secrets import health_probe_token
from chatcore.service.health import HealthService
from chatcore.settings import Settings


def check_probe_token(settings: Settings, request: Request) -> None:
    """Live probing needs `Authorization: Bearer <token>`; without a token configured it is off.

    The token is `HEALTH_PROBE_TOKEN` locally, the secret named by `HEALTH_PROBE_TOKEN_SECRET` in Lambda.
    """
    expected = health_probe_token(settings)
    if not expected:
        raise errors.ForbiddenError("Live probing is disabled: set HEALTH_PROBE_TOKEN_SECRET (or HEALTH_PROBE_TOKEN "
                                    "locally) to enable ?probe=true.")
    token = bearer_token(request.headers)
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
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
