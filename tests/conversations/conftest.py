"""Fixtures for the conversation store: settings and a store on the suite-wide `table` (the emulator,
tests/conftest.py), an app wired with DynamoDB memory and a header authenticator."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from chatcore import errors
from chatcore.api.app import Components, create_app
from chatcore.auth import Principal
from chatcore.conversations.memory import DynamoMemory
from chatcore.conversations.store import ConversationStore
from chatcore.conversations.summarizer import ConversationSummarizer, SummaryTrigger
from chatcore.limits import NoLimits
from chatcore.providers import ProviderRegistry
from chatcore.providers.base import Provider
from chatcore.routing.router import Router
from chatcore.settings import Settings
from starlette.requests import HTTPConnection

from tests.moto_dynamodb import Table

POLL_TIMEOUT_S = 30.0  # generous: a loaded CI machine may be slow; the poll ends as soon as it succeeds


class HeaderAuthenticator:
    """Test authenticator: the caller is whoever the `x-test-user` header names."""

    async def authenticate(self, request: HTTPConnection) -> Principal:
        user = request.headers.get("x-test-user")
        if not user:
            raise errors.UnauthorizedError("Missing x-test-user.")
        return Principal(user_id=user, method="test")


@pytest.fixture
def store_settings(table: Table) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base = Settings(stage="test", default_model="mock/echo", mock_ttft_ms=0.0, mock_pace_ms=0.0,
                        cors_in_app=False, memory="dynamodb", table_name=table.name,
                        dynamodb_endpoint_url=table.endpoint,
                        summary_model="mock/echo", summary_trigger_tokens=0)
        return dataclasses.replace(base, **overrides)

    return make


@pytest.fixture
def store(dynamodb: Any, store_settings: Callable[..., Settings]) -> ConversationStore:
    return ConversationStore(store_settings(), client=dynamodb)


@pytest.fixture
def user() -> str:
    """A fresh user id, so tests sharing the table never see each other's data."""
    return f"user-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def stored_app_server(serve_asgi: Callable[..., str], dynamodb: Any,
                      store_settings: Callable[..., Settings]) -> Callable[..., tuple[str, ConversationStore]]:
    """Factory: the chat app with DynamoDB memory and `HeaderAuthenticator`, served by uvicorn.

    Returns the base URL and the store the app writes to. `providers=` registers extra providers;
    `limiter=` puts limits in front (default: none).
    """

    def start(providers: dict[str, Provider] | None = None, limiter: Any = None,
              **overrides: Any) -> tuple[str, ConversationStore]:
        settings = store_settings(**overrides)
        registry = ProviderRegistry(settings, overrides=providers)
        conversation_store = ConversationStore(settings, client=dynamodb)
        trigger = SummaryTrigger(settings, ConversationSummarizer(settings, conversation_store, Router(settings, registry)))
        memory = DynamoMemory(settings, conversation_store, trigger)
        components = Components(settings=settings, providers=registry, authenticator=HeaderAuthenticator(),
                                limiter=limiter or NoLimits(), memory=memory, conversations=conversation_store)
        return serve_asgi(create_app(components=components)), conversation_store

    return start


def _poll(check: Callable[[], Any], timeout: float = POLL_TIMEOUT_S) -> Any:
    """Call `check` until it returns something truthy (then return it) or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: last result {result!r}")
        time.sleep(0.05)


@pytest.fixture
def poll() -> Callable[..., Any]:
    """`poll(check)`: wait until `check()` is truthy and return its value (fails after a generous timeout)."""
    return _poll


from tests.llmock_upstream import llmock, llmock_server  # noqa: E402  (the summarize test's upstream)

__all__ = ["llmock", "llmock_server"]
