"""Routing benchmark: the routing decision's overhead, and time to first token after a fast failure.

`run()` returns a markdown section. Targets: decision overhead at most 0.2 ms per request; with
the first deployment failing fast, TTFT within 5 ms of the second deployment's own TTFT (plus
backoff, which is zero here: a different deployment is tried at once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from chatcore.events import TextDelta
from chatcore.messages import Message, ModelRequest
from chatcore.providers import ProviderRegistry
from chatcore.providers.mock import MockProvider
from chatcore.routing import CircuitBreaker, InMemoryBreakerStore, Router, build_registry
from chatcore.routing.turn import ChatTurn
from chatcore.settings import Settings

TTFT_MS = 20.0
REGISTRY = {
    "deployments": {
        "fails": {"provider": "mock", "model": "fail-500", "tier": "fast"},
        "answers": {"provider": "mock", "model": f"echo?ttft_ms={TTFT_MS:g}&pace_ms=0", "tier": "fast"},
        "instant": {"provider": "mock", "model": "echo?ttft_ms=0&pace_ms=0", "tier": "fast"},
    },
    "aliases": {"fallback": ["fails", "answers"], "direct": ["answers"], "plain": ["instant"]},
}


def _router() -> Router:
    settings = dataclasses.replace(Settings(), mock_ttft_ms=0, mock_pace_ms=0, breaker_failure_threshold=10**9)
    providers = ProviderRegistry(settings, overrides={"mock": MockProvider(ttft_ms=0, pace_ms=0)})
    return Router(settings, providers, registry=build_registry(REGISTRY),
                  breaker=CircuitBreaker(InMemoryBreakerStore(), failure_threshold=10**9))


def _turn(model: str) -> ChatTurn:
    return ChatTurn(model=model, messages=(Message("user", "hi"),))


async def _timeit(fn: Callable[[], Coroutine[Any, Any, Any]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _decision_ms(router: Router, n: int) -> list[float]:
    turn = _turn("fallback")

    async def decide() -> None:
        chain = router.usable(router.select(turn))
        await router.breaker.prepare([d.name for d in chain])
        for d in chain:
            await router.breaker.admit(d.name)

    await decide()
    return await _timeit(decide, n)


async def _stream_ms(router: Router | None, n: int) -> list[float]:
    """Whole instant answers, through the router or straight from the provider."""
    provider = MockProvider(ttft_ms=0, pace_ms=0)
    request = ModelRequest(model="echo?ttft_ms=0&pace_ms=0", messages=(Message("user", "hi"),))

    async def through_router() -> None:
        assert router is not None
        async for _ in router.stream(_turn("plain")):
            pass

    async def direct() -> None:
        async for _ in provider.stream(request):
            pass

    return await _timeit(through_router if router else direct, n)


async def _ttft_ms(router: Router, model: str, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        stream = router.stream(_turn(model))
        async for event in stream:
            if isinstance(event, TextDelta):
                samples.append((time.perf_counter() - started) * 1000)
                break
        await stream.aclose()  # type: ignore[attr-defined]
    return samples


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure() -> dict[str, list[float]]:
    router = _router()
    import logging

    logging.getLogger("chat").setLevel(logging.WARNING)  # keep per-request log lines out of the timing
    return {
        "decision": await _decision_ms(router, 2000),
        "router": await _stream_ms(router, 500),
        "direct": await _stream_ms(None, 500),
        "ttft_direct": await _ttft_ms(router, "direct", 40),
        "ttft_fallback": await _ttft_ms(router, "fallback", 40),
    }


def run() -> str:
    """Run the routing benchmark and return its markdown section."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # EMF metric lines go to stdout
        m = asyncio.run(_measure())
    med = statistics.median
    decision = med(m["decision"])
    overhead = med(m["router"]) - med(m["direct"])
    ttft_gap = med(m["ttft_fallback"]) - med(m["ttft_direct"])
    lines = [
        "## Routing",
        "",
        "In-process, mock provider, in-memory breaker (warm cache: no DynamoDB on the hot path).",
        "",
        "| measure | median | p95 | target | met |",
        "|---|---|---|---|---|",
        f"| routing decision (select + filter + breaker admit), 2-deployment chain | {decision:.4f} ms "
        f"| {_p(m['decision'], 0.95):.4f} ms | ≤ 0.2 ms | {'yes' if decision <= 0.2 else 'no'} |",
        f"| whole instant answer through the router minus straight from the provider | {overhead:.3f} ms "
        f"| – | (includes log line + EMF record) | – |",
        f"| TTFT, second deployment alone (mock TTFT {TTFT_MS:g} ms) | {med(m['ttft_direct']):.2f} ms "
        f"| {_p(m['ttft_direct'], 0.95):.2f} ms | – | – |",
        f"| TTFT, first deployment fails fast then the second answers | {med(m['ttft_fallback']):.2f} ms "
        f"| {_p(m['ttft_fallback'], 0.95):.2f} ms | ≤ alone + 5 ms | {'yes' if ttft_gap <= 5 else 'no'} "
        f"(+{ttft_gap:.2f} ms) |",
        "",
        "No backoff applies in the fallback case: a different deployment is tried at once; backoff and "
        "Retry-After waits apply only to retries of the same deployment.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
