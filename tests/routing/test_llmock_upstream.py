"""Fallback against a real third-party upstream emulator (llmock) over HTTP on 127.0.0.1.

The OpenAI adapter talks to llmock; the fallback deployment is the mock provider. Each scripted
fault must lead to the right next action and the right client-visible outcome.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from chatcore import errors
from chatcore.events import ErrorEvent, Event, Finish, Start, TextDelta
from chatcore.messages import Message
from chatcore.providers import ProviderRegistry
from chatcore.providers.openai import OpenAIProvider
from chatcore.routing import CircuitBreaker, InMemoryBreakerStore, Router, build_registry
from chatcore.routing.turn import ChatTurn
from chatcore.settings import Settings

from tests.routing.upstreams import LLMock

REGISTRY = {
    "deployments": {
        "up": {"provider": "openai", "model": "gpt-4o-mini", "context_window": 16000,
               "prices": {"input": 0.15, "output": 0.6}, "timeouts": {"first_token_s": 2}},
        "backup": {"provider": "mock", "model": "echo", "context_window": 200000},
    },
    "aliases": {"chain": ["up", "backup"], "solo": ["up"]},
}


def make_router(llmock: LLMock, **settings: Any) -> Router:
    config = dataclasses.replace(Settings(), mock_ttft_ms=0, mock_pace_ms=0, **settings)
    providers = ProviderRegistry(config, overrides={
        "openai": OpenAIProvider(api_key="sk-test-not-real", base_url=llmock.openai_base)})
    breaker = CircuitBreaker(InMemoryBreakerStore(), failure_threshold=config.breaker_failure_threshold,
                             cooldown_s=config.breaker_cooldown_s)
    return Router(config, providers, registry=build_registry(REGISTRY), breaker=breaker)


async def run(router: Router, model: str) -> list[Event]:
    events = [e async for e in router.stream(ChatTurn(model=model, messages=(Message("user", "hello"),)))]
    await router.breaker.drain()
    return events


def chat_calls(llmock: LLMock) -> list[dict[str, Any]]:
    return llmock.requests("/chat/completions")


async def test_healthy_upstream_answers_with_usage_and_cost(llmock: LLMock) -> None:
    events = await run(make_router(llmock), "chain")
    assert events[0].deployment == "up"  # type: ignore[union-attr]
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.usage is not None
    assert finish.metadata["costUsd"] is not None and finish.metadata["fallbacks"] == []
    assert len(chat_calls(llmock)) == 1


@pytest.mark.parametrize(("behavior", "code", "breaker_state"), [
    ({"type": "fail", "status": 429, "retry_after": 30}, "provider_rate_limited", "closed"),
    ({"type": "fail", "status": 529}, "provider_overloaded", "closed"),
    ({"type": "fail", "status": 500}, "provider_server_error", "closed"),
    ({"type": "fail", "status": 401}, "provider_authentication", "open"),
    ({"type": "fail", "status": 429, "code": "insufficient_quota"}, "provider_quota_exhausted", "open"),
    ({"type": "fail", "status": 400, "code": "context_length_exceeded",
      "message": "This model's maximum context length is 16000 tokens."}, "context_too_long", "closed"),
    ({"type": "stream_fault", "kind": "truncate", "after_chunks": 0}, "provider_stream_truncated", "closed"),
    ({"type": "stream_fault", "kind": "disconnect", "after_chunks": 0}, "provider_stream_truncated", "closed"),
])
async def test_upstream_fault_falls_back_to_the_next_deployment(llmock: LLMock, behavior: dict[str, Any],
                                                               code: str, breaker_state: str) -> None:
    llmock.scenario(behavior)
    router = make_router(llmock)
    events = await run(router, "chain")
    start = events[0]
    assert isinstance(start, Start) and start.deployment == "backup"
    assert start.fallbacks == (f"up:{code}",)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "You said: hello"
    assert router.breaker.state("up").state == breaker_state
    assert len(chat_calls(llmock)) == 1


async def test_rate_limit_with_a_short_retry_after_retries_the_same_deployment(llmock: LLMock) -> None:
    llmock.scenario({"type": "fail", "status": 429, "retry_after": 0.05})
    events = await run(make_router(llmock), "solo")
    assert events[0].deployment == "up"  # type: ignore[union-attr]
    assert events[0].fallbacks == ("up:provider_rate_limited",)  # type: ignore[union-attr]
    assert isinstance(events[-1], Finish)
    calls = chat_calls(llmock)
    assert [c["status"] for c in calls] == [429, 200]


async def test_overloaded_without_fallback_is_503_with_the_providers_code(llmock: LLMock) -> None:
    llmock.scenario({"type": "fail", "status": 529, "times": 5})
    with pytest.raises(errors.OverloadedError) as caught:
        await run(make_router(llmock, router_backoff_base_s=0.01), "solo")
    assert caught.value.retryable
    assert len(chat_calls(llmock)) == 2  # the first call and one backoff retry


async def test_truncated_after_tokens_ends_with_an_error_event_and_no_switch(llmock: LLMock) -> None:
    llmock.scenario({"type": "stream_fault", "kind": "truncate", "after_chunks": 3})
    events = await run(make_router(llmock), "chain")
    assert events[0].deployment == "up"  # type: ignore[union-attr]
    assert any(isinstance(e, TextDelta) for e in events)
    error = events[-1]
    assert isinstance(error, ErrorEvent) and error.code == "provider_stream_truncated"
    assert error.metadata["deployment"] == "up"
    assert len(chat_calls(llmock)) == 1


async def test_breaker_opens_skips_and_closes_after_a_good_trial(llmock: LLMock) -> None:
    router = make_router(llmock, breaker_failure_threshold=2, breaker_cooldown_s=30.0)
    clock = [1_800_000_000.0]
    router.breaker._clock = lambda: clock[0]
    llmock.scenario({"type": "fail", "status": 500, "times": 2})
    for _ in range(2):
        assert (await run(router, "chain"))[0].deployment == "backup"  # type: ignore[union-attr]
    assert router.breaker.state("up").state == "open"
    events = await run(router, "chain")
    assert events[0].fallbacks == ("up:circuit_open",)  # type: ignore[union-attr]
    assert len(chat_calls(llmock)) == 2  # the open circuit kept the third request off the upstream
    clock[0] += 31
    events = await run(router, "chain")  # half-open: one trial, which succeeds
    assert events[0].deployment == "up"  # type: ignore[union-attr]
    assert router.breaker.state("up").state == "closed"
    assert len(chat_calls(llmock)) == 3
