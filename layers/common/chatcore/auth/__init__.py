"""Who is calling. The user id comes only from a verified credential, never from the request body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from starlette.requests import HTTPConnection


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    tier: str = "free"
    method: str = "none"


class Authenticator(Protocol):
    async def authenticate(self, request: HTTPConnection) -> Principal:
        """Return the verified caller or raise `UnauthorizedError`."""
        ...


class LocalAuthenticator:
    """`AUTH_MODE=none`: everyone is one local user. For local development only."""

    def __init__(self, user_id: str = "local-user", tier: str = "free") -> None:
        self.principal = Principal(user_id=user_id, tier=tier, method="none")

    async def authenticate(self, request: HTTPConnection) -> Principal:
        return self.principal
