"""Who is calling: the verified identity every component keys its data and limits by, and the
bearer credential a request shows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller. The user id comes only from a credential, never from a request body."""

    user_id: str
    tier: str = "free"
    method: str = "none"


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None if there is none."""
    header = headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
