"""The fallback matrix over the mock provider's faults: each error class, the next action, the outcome."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from chatcore import errors
from chatcore.events import ErrorEvent, Event, Finish, ProviderEvent, Start, TextDelta
from chatcore.messages import Message, ModelRequest
from chatcore.providers import ProviderRegistry
from chatcore.providers.base import ProbeResult
from chatcore.providers.mock import MockProvider
from chatcore.routing import CircuitBreaker, InMemoryBreakerStore, Router, build_registry
from chatcore.routing.turn import ChatTurn
from chatcore.settings import Settings


class CountingMock:
    """The real mock provider, recording which models were called, in order."""

    def __init__(self, name: str = "mock") -> None:
        self.name = name
        self.inner = MockProvider(ttft_ms=0, pace_ms=0)
        self.calls: list[str] = []

    def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        self.calls.append(request.model)
        return self.inner.stream(request)

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        return await self.inner.probe(timeout)


def deployment(model: str, provider: str = "mock", **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, "tier": "fast", **extra}


REGISTRY = {
    "deployments": {
        "ok": deployment("echo", context_window=32000, prices={"input": 1.0, "output": 2.0}),
        "ok-other": deployment("echo?text=other%20provider", provider="mock2"),
        "big": deployment("echo?text=big%20window", context_window=1_000_000),
        "f429": deployment("fail-429?retry_after=0.01"),
        "f429-long": deployment("fail-429?retry_after=30"),
        "f429-2s": deployment("fail-429?retry_after=2"),
        "f529": deployment("fail-529"),
        "f500": deployment("fail-500", context_window=8000),
        "f401": deployment("fail-401"),
        "fquota": deployment("fail-quota"),
        "f400": deployment("fail-400"),
        "fctx": deployment("fail-context", context_window=8000),
        "trunc0": deployment("truncate-after-0"),
        "stall": deployment("stall", timeouts={"first_token_s": 0.2}),
        "midfail": deployment("fail-after-2?text=one two three four"),
    },
    "aliases": {},
}


def make_router(aliases: dict[str, list[str]] | None = None, **settings: Any) -> tuple[Router, CountingMock,
                                                                                        CountingMock]:
    registry = build_registry({**REGISTRY, "aliases": aliases or {}})
    config = dataclasses.replace(Settings(), mock_ttft_ms=0, mock_pace_ms=0, **settings)
    mock, mock2 = CountingMock("mock"), CountingMock("mock2")
    providers = ProviderRegistry(config, overrides={"mock": mock, "mock2": mock2})
    breaker = CircuitBreaker(InMemoryBreakerStore(), failure_threshold=config.breaker_failure_threshold,
                             cooldown_s=config.breaker_cooldown_s)
    return Router(config, providers, registry=registry, breaker=breaker), mock, mock2


def turn(model: str, text: str = "hello", **extra: Any) -> ChatTurn:
    return ChatTurn(model=model, messages=(Message("user", text),), **extra)


async def collect(router: Router, chat: ChatTurn) -> list[Event]:
    events = [e async for e in router.stream(chat)]
    await router.breaker.drain()
    return events


@pytest.mark.parametrize(("fault", "code", "breaker_state", "failures"), [
    ("f429", "provider_rate_limited", "closed", 1),
    ("f529", "provider_overloaded", "closed", 1),
    ("f500", "provider_server_error", "closed", 1),
    ("trunc0", "provider_stream_truncated", "closed", 1),
    ("stall", "provider_timeout", "closed", 1),
    ("f401", "provider_authentication", "open", 1),
    ("fquota", "provider_quota_exhausted", "open", 1),
])
async def test_failure_before_first_token_falls_back(fault: str, code: str, breaker_state: str,
                                                     failures: int) -> None:
    router, mock, _ = make_router({"chain": [fault, "ok"]})
    events = await collect(router, turn("chain"))
    start, finish = events[0], events[-1]
    assert isinstance(start, Start) and start.deployment == "ok"
    assert start.fallbacks == (f"{fault}:{code}",)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "You said: hello"
    assert isinstance(finish, Finish)
    assert finish.metadata["deployment"] == "ok"
    assert finish.metadata["fallbacks"] == [{"deployment": fault, "error": code}]
    assert isinstance(finish.metadata["costUsd"], float) and finish.metadata["costUsd"] > 0
    assert mock.calls[-1] == "echo"
    state = router.breaker.state(fault)
    assert (state.state, state.failures, state.reason) == (breaker_state, failures, code)
    # Unhealthy deployments are skipped by the next request without being called.
    calls_before = len(mock.calls)
    events = await collect(router, turn("chain"))
    if breaker_state == "open":
        assert events[0].fallbacks == (f"{fault}:circuit_open",)  # type: ignore[union-attr]
        assert len(mock.calls) == calls_before + 1
    else:
        assert len(mock.calls) == calls_before + 2


async def test_bad_request_is_the_clients_error_and_stops_the_chain() -> None:
    router, mock, _ = make_router({"chain": ["f400", "ok"]})
    with pytest.raises(errors.BadRequestError) as caught:
        await collect(router, turn("chain"))
    assert caught.value.status_code == 400
    assert mock.calls == ["fail-400"]


async def test_context_too_long_falls_back_only_to_a_larger_window() -> None:
    router, mock, _ = make_router({"chain": ["fctx", "f500", "big"]})
    events = await collect(router, turn("chain"))
    assert events[0].deployment == "big"  # type: ignore[union-attr]
    assert mock.calls == ["fail-context", "echo?text=big%20window"]  # f500 (8k window) skipped
    assert router.breaker.state("fctx").failures == 0  # a long prompt says nothing about the deployment


async def test_context_too_long_without_a_larger_window_is_a_clear_413() -> None:
    router, _, _ = make_router({"chain": ["fctx"]})
    with pytest.raises(errors.ContextTooLongError) as caught:
        await collect(router, turn("chain"))
    assert caught.value.status_code == 413
    assert "too long for every available model" in caught.value.message


async def test_retry_after_that_fits_retries_the_same_deployment() -> None:
    router, mock, _ = make_router()
    with pytest.raises(errors.RateLimitedError):
        await collect(router, turn("mock/fail-429?retry_after=0.01"))
    assert mock.calls == ["fail-429?retry_after=0.01"] * 2  # one retry (ROUTER_RETRIES_PER_DEPLOYMENT=1)


async def test_retry_after_too_long_is_not_waited_for() -> None:
    router, mock, _ = make_router()
    with pytest.raises(errors.RateLimitedError) as caught:
        await collect(router, turn("mock/fail-429?retry_after=30"))
    assert caught.value.retry_after == 30  # surfaced to the client as Retry-After
    assert len(mock.calls) == 1


async def test_retry_that_would_pass_the_deadline_is_not_attempted() -> None:
    router, mock, _ = make_router(router_max_retry_after_s=60.0, deadline_margin_s=0.0)
    with pytest.raises(errors.RateLimitedError):
        await collect(router, turn("mock/fail-429?retry_after=3", deadline_s=1.5))
    assert len(mock.calls) == 1


async def test_another_provider_is_tried_before_a_retry_of_the_same_one() -> None:
    router, mock, mock2 = make_router({"chain": ["f529", "f500", "ok-other"]})
    events = await collect(router, turn("chain"))
    assert events[0].deployment == "ok-other"  # type: ignore[union-attr]
    # After mock's f529 failed, mock2 went next, ahead of mock's own f500.
    assert mock.calls == ["fail-529"]
    assert mock2.calls == ["echo?text=other%20provider"]


async def test_backoff_retries_are_bounded_by_max_attempts() -> None:
    router, mock, _ = make_router({"chain": ["f500", "f529"]}, router_max_attempts=3,
                                  router_backoff_base_s=0.001, router_backoff_cap_s=0.002)
    with pytest.raises(errors.ProviderError):
        await collect(router, turn("chain"))
    assert len(mock.calls) == 3


async def test_failure_after_first_token_is_an_error_event_not_a_switch() -> None:
    router, mock, _ = make_router({"chain": ["midfail", "ok"]})
    events = await collect(router, turn("chain"))
    assert events[0].deployment == "midfail"  # type: ignore[union-attr]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two "
    error = events[-1]
    assert isinstance(error, ErrorEvent)
    assert error.metadata["deployment"] == "midfail" and error.metadata["fallbacks"] == []
    assert error.usage is not None and error.usage.output_tokens == 2
    assert mock.calls == ["fail-after-2?text=one two three four"]  # never switched to "ok"


async def test_ad_hoc_mock_models_bypass_the_breaker() -> None:
    router, _, _ = make_router()
    for _ in range(5):
        with pytest.raises(errors.ServerError):
            await collect(router, turn("mock/fail-500"))
    assert router.breaker.state("mock/fail-500").failures == 0


async def test_the_only_deployment_is_tried_even_with_its_circuit_open() -> None:
    """One provider configured: an open circuit must not turn every request into a 503."""
    router, mock, _ = make_router({"solo": ["f401"]})
    with pytest.raises(errors.AuthenticationError):
        await collect(router, turn("solo"))
    assert router.breaker.is_open("f401")
    with pytest.raises(errors.AuthenticationError):  # the truthful error again, not "circuit open"
        await collect(router, turn("solo"))
    assert len(mock.calls) == 2


async def test_repeated_failures_of_the_only_deployment_never_refuse_with_503() -> None:
    router, mock, _ = make_router({"solo": ["f500"]}, breaker_failure_threshold=3, router_retries_per_deployment=0)
    for _ in range(3):
        with pytest.raises(errors.ServerError):
            await collect(router, turn("solo"))
    assert router.breaker.is_open("f500")
    with pytest.raises(errors.ServerError):  # still tried: its own error, not "unavailable after repeated failures"
        await collect(router, turn("solo"))
    assert len(mock.calls) == 4


async def test_a_rate_limit_opens_the_circuit_no_longer_than_the_provider_asked() -> None:
    router, _, _ = make_router({"pair": ["f429-2s", "ok"]}, breaker_failure_threshold=1)
    started = router.breaker.now()
    await collect(router, turn("pair"))  # a 429 asking for 2 s, then the fallback answers
    finished = router.breaker.now()
    state = router.breaker.state("f429-2s")
    assert state.state == "open" and started + 2 <= state.open_until <= finished + 2  # not the 30 s cooldown
    router.breaker._clock = lambda: finished  # the next request while the circuit is open, however slow CI is
    events = await collect(router, turn("pair"))
    start = next(e for e in events if isinstance(e, Start))
    assert start.deployment == "ok" and "f429-2s:circuit_open" in start.fallbacks  # skipped: another can answer
