"""Provider adapters behind one interface, and the registry that builds them on first use.

Adding a provider is one module and one line in `_FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from chatcore import errors
from chatcore.providers.base import Provider
from chatcore.settings import Settings


def _mock(settings: Settings) -> Provider:
    from chatcore.providers.mock import MockProvider

    return MockProvider(ttft_ms=settings.mock_ttft_ms, pace_ms=settings.mock_pace_ms, tokens=settings.mock_tokens)


def _openai(settings: Settings) -> Provider | None:
    from chatcore.providers.openai import OpenAIProvider
    from chatcore.secrets import api_key_getter

    key = api_key_getter(settings, "openai", settings.openai_api_key)
    if key is None and settings.openai_base_url == "https://api.openai.com/v1":
        return None
    return OpenAIProvider(api_key=key, base_url=settings.openai_base_url)


def _optional(module: str, factory: str) -> Callable[[Settings], Provider | None]:
    """A factory that lives in a module written later or not installed: absent means disabled."""

    def build(settings: Settings) -> Provider | None:
        try:
            mod = import_module(module)
        except ModuleNotFoundError:
            return None
        return getattr(mod, factory)(settings)  # type: ignore[no-any-return]

    return build


_FACTORIES: dict[str, Callable[[Settings], Provider | None]] = {
    "mock": _mock,
    "openai": _openai,
    "anthropic": _optional("chatcore.providers.anthropic", "from_settings"),
    "gemini": _optional("chatcore.providers.gemini", "from_settings"),
    "bedrock": _optional("chatcore.providers.bedrock", "from_settings"),
    "ollama": _optional("chatcore.providers.ollama", "from_settings"),
}


class ProviderRegistry:
    """Providers by name, each built on first use (so a cold start pays only for what it uses)."""

    def __init__(self, settings: Settings, overrides: dict[str, Provider] | None = None) -> None:
        self._settings = settings
        self._built: dict[str, Provider | None] = dict(overrides or {})

    def _build(self, name: str) -> Provider | None:
        if name not in self._built:
            factory = _FACTORIES.get(name)
            self._built[name] = factory(self._settings) if factory else None
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
        return sorted(name for name in _FACTORIES.keys() | self._built.keys() if self._build(name) is not None)


def split_model(model: str) -> tuple[str, str]:
    """`provider/model`, split at the first `/` (model ids may contain more slashes)."""
    provider, sep, rest = model.partition("/")
    if not sep or not provider or not rest:
        raise errors.RequestError(
            f"Model must be written 'provider/model', e.g. 'mock/echo' or 'openai/gpt-4o-mini'; got {model!r}.")
    return provider, rest
