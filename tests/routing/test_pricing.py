"""Cost is one function of the provider's final usage, wherever the usage arrived in the stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from chatcore.events import Finish, ProviderEvent, TextDelta, Usage, UsageReport
from chatcore.messages import Message, ModelRequest
from chatcore.providers import ProviderRegistry
from chatcore.providers.base import ProbeResult
from chatcore.routing import Router, build_registry, cost_usd
from chatcore.routing.registry import Deployment
from chatcore.routing.turn import ChatTurn
from chatcore.settings import Settings
from hypothesis import given
from hypothesis import strategies as st

PRICED = Deployment(name="p", provider="x", model="m", input_price=3.0, output_price=15.0, cached_input_price=0.3)


def test_cost_of_known_usage() -> None:
    # 1,000 input of which 400 cached, 500 output: 600*3 + 400*0.3 + 500*15 per million.
    assert cost_usd(Usage(1000, 500, cached_input_tokens=400), PRICED) == pytest.approx(0.00942)
    assert cost_usd(Usage(1000, 500), PRICED) == pytest.approx(0.0105)
    assert cost_usd(None, PRICED) is None
    assert cost_usd(Usage(), PRICED) is None
    no_cache_price = Deployment(name="q", provider="x", model="m", input_price=2.0, output_price=8.0)
    assert cost_usd(Usage(100, 0, cached_input_tokens=100), no_cache_price) == pytest.approx(0.0002)


@given(st.integers(0, 10**7), st.integers(0, 10**6), st.integers(0, 10**7))
def test_cost_is_never_negative_and_caching_never_costs_more(inputs: int, outputs: int, cached: int) -> None:
    full = cost_usd(Usage(inputs, outputs), PRICED)
    with_cache = cost_usd(Usage(inputs, outputs, cached_input_tokens=cached), PRICED)
    assert full is not None and with_cache is not None
    assert 0 <= with_cache <= full


class ScriptedUsage:
    """A provider that reports the same usage either in a usage chunk or only on `Finish`."""

    name = "scripted"

    def __init__(self, usage_on_finish: bool) -> None:
        self.usage_on_finish = usage_on_finish

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        usage = Usage(1234, 56, cached_input_tokens=200)
        yield TextDelta("hello")
        if self.usage_on_finish:
            yield Finish("stop", usage=usage)
        else:
            yield UsageReport(usage)
            yield Finish("stop")

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        return ProbeResult("up", 0.0)


@pytest.mark.parametrize("usage_on_finish", [True, False])
async def test_streamed_cost_matches_the_cost_function(usage_on_finish: bool) -> None:
    registry = build_registry({"deployments": {"s": {"provider": "scripted", "model": "m", "prices": {
        "input": 3.0, "output": 15.0, "cached_input": 0.3}}}})
    settings = Settings()
    router = Router(settings, ProviderRegistry(settings, overrides={"scripted": ScriptedUsage(usage_on_finish)}),
                    registry=registry)
    events = [e async for e in router.stream(ChatTurn(model="s", messages=(Message("user", "hi"),)))]
    finish = events[-1]
    assert isinstance(finish, Finish)
    expected = cost_usd(Usage(1234, 56, cached_input_tokens=200), registry.deployments["s"])
    assert finish.metadata["costUsd"] == expected
    assert finish.usage == Usage(1234, 56, cached_input_tokens=200)
