"""Provider API keys (and the health probe token): from the environment, or in Lambda from SSM /
Secrets Manager by name.

Fetched on first use (never at import), once per cold start, through Powertools Parameters
(which caches too). A secret name starting with `ssm:` is an SSM (SecureString) parameter; anything
else (optionally prefixed `secretsmanager:`) is a Secrets Manager secret id. A Secrets Manager
secret may hold the bare key or a JSON object with an `api_key` field.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from chatcore import errors
from chatcore.settings import Settings

_cache: dict[str, str] = {}
_lock = threading.Lock()  # Bedrock's worker threads and the event loop may ask at once


def fetch_secret(name: str, provider: str = "") -> str:
    """The secret's value, fetched once per process (cold start) and then served from memory."""
    with _lock:
        if name in _cache:
            return _cache[name]
        value = _load(name, provider)
        _cache[name] = value
        return value


def clear_cache() -> None:
    """Forget fetched secrets (tests, or after a rotation)."""
    with _lock:
        _cache.clear()


def _load(name: str, provider: str) -> str:
    from aws_lambda_powertools.utilities import parameters

    try:
        if name.startswith("ssm:"):
            raw = parameters.get_parameter(name[4:], decrypt=True, max_age=3600)
        else:
            raw = parameters.get_secret(name.removeprefix("secretsmanager:"), max_age=3600)
    except Exception as exc:
        # The exception text can quote the request; keep it out of the client-facing message.
        # A ProviderError, so the router can fall back to another provider.
        raise errors.ServerError("A provider credential could not be loaded.", provider=provider,
                                 retryable=False) from exc
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return _key_from(text.strip())


def _key_from(text: str) -> str:
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return text
        if isinstance(data, dict):
            for field in ("api_key", "apiKey", "key"):
                if isinstance(data.get(field), str):
                    return str(data[field]).strip()
    return text


def api_key_getter(settings: Settings, provider: str, direct: str | None) -> Callable[[], str | None] | None:
    """A zero-argument callable returning the key, or None when the provider has no key configured.

    A key set directly in the environment wins; otherwise the secret named in
    `<PROVIDER>_API_KEY_SECRET` is fetched on the first call (the first request), not at startup.
    """
    if direct:
        return lambda: direct
    name = settings.secret_names.get(provider)
    if not name:
        return None
    return lambda: fetch_secret(name, provider)


def health_probe_token(settings: Settings) -> str | None:
    """The bearer token that enables `GET /health?probe=true`, or None when live probing is off.

    `HEALTH_PROBE_TOKEN` (local use) wins; otherwise the secret named in `HEALTH_PROBE_TOKEN_SECRET`
    (same name format as the provider keys) is fetched on the first probe request and kept.
    """
    if settings.health_probe_token:
        return settings.health_probe_token
    if not settings.health_probe_token_secret:
        return None
    try:
        return fetch_secret(settings.health_probe_token_secret) or None
    except errors.ChatError as exc:
        raise errors.ServiceUnavailableError("Live probing is unavailable: its token could not be loaded.") from exc
