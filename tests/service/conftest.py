"""Fixtures for the service tests: the chat app with the response cache on a fresh moto table,
a header authenticator (`x-test-user` names the caller) and a provider that counts its calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from chatcore import errors
from chatcore.api.app import create_app, default_components
from chatcore.auth import Principal
from chatcore.events import ProviderEvent
from chatcore.limits import Limiter
from chatcore.messages import ModelRequest
from chatcore.providers import ProviderRegistry
from chatcore.providers.base import ProbeResult
from chatcore.providers.mock import MockProvider
from chatcore.service.cache import DynamoCacheStore, ResponseCache
from starlette.requests import HTTPConnection

from tests.conftest import settings_for_tests
from tests.moto_dynamodb import Table, new_table


class HeaderAuthenticator:
    """Test authenticator: the caller is whoever the `x-test-user` header names."""

    async def authenticate(self, request: HTTPConnection) -> Principal:
        user = request.headers.get("x-test-user")
        if not user:
            raise errors.UnauthorizedError("Missing x-test-user.")
        return Principal(user_id=user, method="test")


class CountingProvider:
    """The mock provider under another name (`counted/<mock model>`), counting the calls it gets."""

    name = "counted"

    def __init__(self) -> None:
        self.calls = 0
        self._mock = MockProvider(ttft_ms=0, pace_ms=0)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        self.calls += 1
        async for event in self._mock.stream(request):
            yield event

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        return await self._mock.probe(timeout)


@pytest.fixture
def table() -> Table:
    return new_table()


@pytest.fixture
def counted() -> CountingProvider:
    return CountingProvider()


@pytest.fixture
def cached_app(serve_asgi: Callable[..., str], table: Table, counted: CountingProvider) -> Callable[..., str]:
    """Factory: the app with the DynamoDB response cache; `limiter=` replaces the (absent) limits,
    `memories=` the (absent) long-term memory."""

    def start(limiter: Limiter | None = None, memories: Any = None, **overrides: Any) -> str:
        settings = settings_for_tests(table_name=table.name, dynamodb_endpoint_url=table.endpoint,
                                      cache_store="dynamodb", **overrides)
        components = default_components(settings, ProviderRegistry(settings, overrides={"counted": counted}))
        components.authenticator = HeaderAuthenticator()
        components.cache = ResponseCache(settings, DynamoCacheStore(settings, client=table.client))
        if limiter is not None:
            components.limiter = limiter
        if memories is not None:  # long-term memory (anything with `recall`), replacing the configured one
            components.memories = memories
        return serve_asgi(create_app(components=components))

    return start
