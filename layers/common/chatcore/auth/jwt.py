"""`AUTH_MODE=jwt`: bearer tokens from an OIDC issuer (a Cognito user pool or any other).

Checked: the signature against the issuer's JWKS (fetched on first use, cached, refetched when a
token names an unknown `kid`, at most once per `min_refresh_s`), the algorithm against an
allow-list of asymmetric algorithms that must match the key's type (so neither `alg=none` nor an
HMAC "signed" with the public key can pass), `iss` exactly, `aud` or, for Cognito access tokens
which have none, `client_id`, and `exp`/`nbf` with a small leeway. The user id is `sub`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import jwt
from starlette.requests import HTTPConnection

from chatcore import errors
from chatcore.auth import Principal, bearer_token
from chatcore.settings import Settings

# Asymmetric algorithms only, each with the key type it needs.
KEY_TYPES = {
    "RS256": "RSA", "RS384": "RSA", "RS512": "RSA", "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
    "ES256": "EC", "ES384": "EC", "ES512": "EC", "EdDSA": "OKP",
}
TIER_RANK = ("enterprise", "pro", "free")  # for group claims, the best tier the caller belongs to
_TIER_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
MAX_TOKEN_CHARS = 8192

JwksFetcher = Callable[[str], Awaitable[dict[str, Any]]]


async def fetch_jwks(url: str) -> dict[str, Any]:
    """GET the JWKS document with the shared pooled HTTP client and a short timeout."""
    from chatcore.providers.http import client_for

    response = await client_for("jwks").get(url, timeout=5.0, headers={"accept": "application/json"})
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    return document


class JwksCache:
    """The issuer's signing keys by `kid`: loaded lazily, refreshed on an unknown kid (rate-limited)."""

    def __init__(self, url: str, *, fetch: JwksFetcher = fetch_jwks, min_refresh_s: float = 30.0,
                 max_age_s: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.fetches = 0  # how many times the JWKS was requested (observability and tests)
        self._fetch = fetch
        self._min_refresh_s = min_refresh_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """The key for `kid`, or None if the issuer does not publish it (even after a refresh)."""
        now, loaded_at = self._clock(), self._loaded_at
        stale = loaded_at is None or now - loaded_at >= self._max_age_s
        # An unknown kid (key rotation) refetches, but not more often than `min_refresh_s`, so a
        # flood of made-up kids cannot turn into a flood of JWKS requests.
        if stale or (kid not in self._keys and now - (loaded_at or 0.0) >= self._min_refresh_s):
            await self._refresh(loaded_at)
        return self._keys.get(kid)

    async def _refresh(self, seen_loaded_at: float | None) -> None:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._loaded_at != seen_loaded_at:
                return  # another request refreshed while this one waited for the lock
            now = self._clock()
            try:
                document = await self._fetch(self.url)
            except Exception as exc:
                if self._keys:
                    # Keep serving the keys we have; try again after the refresh interval.
                    self._loaded_at = now
                    return
                raise errors.ServiceUnavailableError("Cannot verify credentials right now.",
                                                     retry_after=5) from exc
            finally:
                self.fetches += 1
            keys: dict[str, jwt.PyJWK] = {}
            for data in document["keys"]:
                if not isinstance(data, dict) or not isinstance(data.get("kid"), str):
                    continue
                if data.get("use", "sig") != "sig":
                    continue
                try:
                    keys[data["kid"]] = jwt.PyJWK(data)
                except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                    continue  # a key type we cannot use; other keys still work
            self._keys = keys
            self._loaded_at = now


def tier_from_claims(claims: dict[str, Any], claim: str | None) -> str:
    """The tier named by `claim`: a string value, or the best known tier in a list (groups)."""
    if not claim:
        return "free"
    value = claims.get(claim)
    if isinstance(value, str) and _TIER_NAME.match(value.strip().lower()):
        return value.strip().lower()
    if isinstance(value, list):
        names = {item.strip().lower() for item in value if isinstance(item, str)}
        for tier in TIER_RANK:
            if tier in names:
                return tier
    return "free"


def _audience_matches(claims: dict[str, Any], audiences: Iterable[str]) -> bool:
    allowed = set(audiences)
    aud = claims.get("aud")
    if aud is not None:
        values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        return any(isinstance(value, str) and value in allowed for value in values)
    # Cognito access tokens carry the app client in `client_id` instead of `aud`.
    client_id = claims.get("client_id")
    return isinstance(client_id, str) and client_id in allowed


class JwtAuthenticator:
    def __init__(self, *, issuer: str, audiences: tuple[str, ...], jwks: JwksCache,
                 algorithms: tuple[str, ...] = ("RS256", "ES256"), tier_claim: str | None = None,
                 leeway_s: float = 30.0) -> None:
        if not issuer:
            raise ValueError("AUTH_MODE=jwt needs JWT_ISSUER")
        if not audiences:
            raise ValueError("AUTH_MODE=jwt needs JWT_AUDIENCE (the app client id(s) tokens are issued for)")
        bad = [name for name in algorithms if name not in KEY_TYPES]
        if bad or not algorithms:
            raise ValueError(f"JWT_ALGORITHMS allows only asymmetric algorithms {sorted(KEY_TYPES)}, got {bad}")
        self.issuer = issuer
        self.audiences = audiences
        self.jwks = jwks
        self.algorithms = algorithms
        self.tier_claim = tier_claim
        self.leeway_s = leeway_s

    @classmethod
    def from_settings(cls, settings: Settings, fetch: JwksFetcher = fetch_jwks) -> JwtAuthenticator:
        issuer = settings.jwt_issuer or ""
        url = settings.jwt_jwks_url or f"{issuer.rstrip('/')}/.well-known/jwks.json"
        return cls(issuer=issuer, audiences=settings.jwt_audience, jwks=JwksCache(url, fetch=fetch),
                   algorithms=settings.jwt_algorithms, tier_claim=settings.jwt_tier_claim,
                   leeway_s=settings.jwt_leeway_s)

    async def authenticate(self, request: HTTPConnection) -> Principal:
        """The caller named by a valid bearer token; `InvalidCredentialsError` for any bad token."""
        token = bearer_token(request.headers)
        if token is None:
            raise errors.UnauthorizedError("Missing bearer token.")
        claims = await self.verify(token)
        return Principal(user_id=claims["sub"], tier=tier_from_claims(claims, self.tier_claim), method="jwt")

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is valid for this issuer and audience."""
        invalid = errors.InvalidCredentialsError("The access token is invalid.")
        if len(token) > MAX_TOKEN_CHARS:
            raise invalid
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms or not isinstance(kid, str):
            raise invalid
        key = await self.jwks.get(kid)
        if key is None or key.key_type != KEY_TYPES[alg]:
            raise invalid
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key.key, algorithms=[alg], issuer=self.issuer, leeway=self.leeway_s,
                options={"require": ["exp", "iss", "sub"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise errors.InvalidCredentialsError("The access token has expired.") from None
        except jwt.PyJWTError:
            raise invalid from None
        if not _audience_matches(claims, self.audiences):
            raise invalid
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise invalid
        return claims
