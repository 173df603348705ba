"""Provider API keys: from the environment, or in Lambda from SSM / Secrets Manager by name.

Fetched on first use (never at import), once per cold start, through Powertools Parameters,
which caches. A secret name starting with `ssm:` is an SSM SecureString parameter; anything else
(or `secretsmanager:`) is a Secrets Manager secret id.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from chatcore.settings import Settings


@lru_cache(maxsize=32)
def _fetch(name: str) -> str:
    from aws_lambda_powertools.utilities import parameters

    if name.startswith("ssm:"):
        value = parameters.get_parameter(name[4:], decrypt=True, max_age=3600)
    else:
        value = parameters.get_secret(name.removeprefix("secretsmanager:"), max_age=3600)
    return str(value).strip()


def api_key_getter(settings: Settings, provider: str, direct: str | None) -> Callable[[], str | None] | None:
    """A zero-argument callable returning the key, or None when the provider has no key configured."""
    if direct:
        return lambda: direct
    name = settings.secret_names.get(provider)
    if not name:
        return None
    return lambda: _fetch(name)
