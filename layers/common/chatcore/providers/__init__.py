"""Provider adapters behind one interface, and the registry that builds them on first use.

Adding a provider is one module and one line in `_MODULES`.
"""

from __future__ import annotations

from importlib import import_module
from typing import cast

from chatcore import errors
from chatcore.providers.base import Provider
from chatcore.settings import Settings

# Provider name -> the module whose `from_settings(settings)` builds it (or returns None when its
# settings are absent). Imported on first use, so a cold start pays only for what it uses; an
# import error inside an adapter is a bug and raises, it never reads as "not configured".
_MODULES: dict[str, str] = {
    "mock": "chatcore.providers.mock",
    "openai": "chatcore.providers.openai",
    "anthropic": "chatcore.providers.anthropic",
    "gemini": "chatcore.providers.gemini",
    "bedrock": "chatcore.providers.bedrock",
    "ollama": "chatcore.providers.ollama",
}


def _from_settings(name: str, settings: Settings) -> Provider | None:
    module = _MODULES.get(name)
    if module is None:
        return None
    return cast("Provider | None", import_module(module).from_settings(settings))


class ProviderRegistry:
    """Providers by name, each built on first use (so a cold start pays only for what it uses)."""

    def __init__(self, settings: Settings, overrides: dict[str, Provider] | None = None) -> None:
        self._settings = settings
        self._built: dict[str, Provider | None] = dict(overrides or {})

    def _build(self, name: str) -> Provider | None:
        if name not in self._built:
            self._built[name] = _from_settings(name, self._settings)
        return self._built[name]

    def get(self, name: str) -> Provider:
        provider = self._build(name)
        if provider is None:
            raise errors.UnknownModelError(
                f"Provider '{name}' is not configured. Available: {', '.join(self.available())}.")
        return provider

    def register(self, name: str, provider: Provider) -> None:
        self._built[name] = provider

    def available(self) -> list[str]:
        """Names of the providers whose settings are present."""
        return sorted(name for name in _MODULES.keys() | self._built.keys() if self._build(name) is not None)


def split_model(model: str) -> tuple[str, str]:
    """`provider/model`, split at the first `/` (model ids may contain more slashes)."""
    provider, sep, rest = model.partition("/")
    if not sep or not provider or not rest:
        raise errors.RequestError(
            f"Model must be written 'provider/model', e.g. 'mock/echo' or 'openai/gpt-4o-mini'; got {model!r}.")
    return provider, rest
