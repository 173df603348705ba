"""Fixtures for long-term memory: settings on the suite's emulator table, the memory components, and the
chat app with DynamoDB history, long-term memory and `HeaderAuthenticator` (any user by header)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from chatcore.api.app import Components, create_app
from chatcore.conversations import dynamo_memory
from chatcore.limits import NoLimits
from chatcore.memories import LongTermMemory, build_long_term_memory
from chatcore.providers import ProviderRegistry
from chatcore.routing.router import Router
from chatcore.settings import Settings

from tests.conversations.conftest import HeaderAuthenticator, _poll
from tests.llmock_upstream import llmock, llmock_server
from tests.moto_dynamodb import Table

__all__ = ["llmock", "llmock_server"]


@pytest.fixture
def memory_settings(table: Table) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base = Settings(stage="test", default_model="mock/echo", mock_ttft_ms=0.0, mock_pace_ms=0.0,
                        cors_in_app=False, memory="dynamodb", table_name=table.name,
                        dynamodb_endpoint_url=table.endpoint, summary_model="mock/summarize",
                        summary_trigger_tokens=0, long_term_memory=True, memory_vector_index="local")
        return dataclasses.replace(base, **overrides)

    return make


@pytest.fixture
def ltm(memory_settings: Callable[..., Settings], dynamodb: Any) -> LongTermMemory:
    settings = memory_settings()
    return build_long_term_memory(settings, Router(settings, ProviderRegistry(settings)), client=dynamodb)


@pytest.fixture
def new_user() -> Callable[[], str]:
    return lambda: f"user-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def memory_app(serve_asgi: Callable[..., str],
               memory_settings: Callable[..., Settings]) -> Callable[..., tuple[str, Components]]:
    """Factory: the chat app with history and long-term memory, served by uvicorn; returns (URL, components)."""

    def start(**overrides: Any) -> tuple[str, Components]:
        settings = memory_settings(**overrides)
        registry = ProviderRegistry(settings)
        router = Router(settings, registry)
        memories = build_long_term_memory(settings, router) if settings.long_term_memory else None
        stored = dynamo_memory(settings, router, (memories.extractor,) if memories else ())
        components = Components(settings=settings, providers=registry, authenticator=HeaderAuthenticator(),
                                limiter=NoLimits(), memory=stored, conversations=stored.store, router=router,
                                memories=memories)
        return serve_asgi(create_app(components=components)), components

    return start


@pytest.fixture
def poll() -> Callable[..., Any]:
    return _poll
