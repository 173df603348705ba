"""Who is calling. The user id comes only from a verified credential, never from the request body."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import HTTPConnection

from chatcore.principal import Principal, bearer_token
from chatcore.settings import Settings, in_lambda


class Authenticator(Protocol):
    async def authenticate(self, request: HTTPConnection) -> Principal:
        """Return the verified caller or raise `UnauthorizedError`."""
        ...


__all__ = ["Authenticator", "LocalAuthenticator", "Principal", "bearer_token", "build_authenticator"]


class LocalAuthenticator:
    """`AUTH_MODE=none`: everyone is one local user. For local development only."""

    def __init__(self, user_id: str = "local-user", tier: str = "free") -> None:
        self.principal = Principal(user_id=user_id, tier=tier, method="none")

    async def authenticate(self, request: HTTPConnection) -> Principal:
        return self.principal


def build_authenticator(settings: Settings, *, lambda_environment: bool | None = None) -> Authenticator:
    """The authenticator `AUTH_MODE` names. Raises `ValueError` on a missing or unsafe configuration.

    `none` is refused inside Lambda (where `AUTH_MODE` has no default) unless
    `AUTH_ALLOW_NONE_IN_LAMBDA=true`: a deployed function must never be open by accident.
    """
    mode = settings.auth_mode
    inside_lambda = in_lambda() if lambda_environment is None else lambda_environment
    if mode == "jwt":
        from chatcore.auth.jwt import JwtAuthenticator

        return JwtAuthenticator.from_settings(settings)
    if mode == "api_key":
        from chatcore.auth.api_keys import ApiKeyAuthenticator

        return ApiKeyAuthenticator.from_settings(settings)
    if mode == "none":
        if inside_lambda and not settings.auth_allow_none_in_lambda:
            raise ValueError("AUTH_MODE=none is for local development; inside Lambda set AUTH_MODE=jwt or "
                             "api_key (or force it with AUTH_ALLOW_NONE_IN_LAMBDA=true)")
        return LocalAuthenticator()
    if not mode:
        raise ValueError("AUTH_MODE must be set inside Lambda: jwt, api_key or none")
    raise ValueError(f"AUTH_MODE must be jwt, api_key or none, got {mode!r}")
