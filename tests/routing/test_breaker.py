"""The circuit breaker: opens, half-opens with one trial fleet-wide, closes; shared through DynamoDB (the emulator)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from chatcore.dynamodb import dynamodb_client
from chatcore.routing.breaker import CircuitBreaker, DynamoBreakerStore, InMemoryBreakerStore

from tests.moto_dynamodb import Table


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def dynamo_store(table: Table) -> DynamoBreakerStore:
    return DynamoBreakerStore(table.name, lambda: dynamodb_client("us-east-1", table.endpoint))


def instance(store: Any, clock: FakeClock, **options: Any) -> CircuitBreaker:
    """One Lambda instance's breaker: its own cache, the shared store."""
    return CircuitBreaker(store, failure_threshold=2, cooldown_s=30, cache_ttl_s=5, clock=clock, **options)


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return InMemoryBreakerStore()
    return dynamo_store(request.getfixturevalue("table"))


async def test_opens_half_opens_and_closes(store: Any) -> None:
    clock = FakeClock()
    breaker = instance(store, clock)
    await breaker.prepare(["d"])
    assert await breaker.admit("d") == "allow"
    breaker.record_failure("d", "provider_overloaded")
    await breaker.drain()
    assert await breaker.admit("d") == "allow"  # one failure is below the threshold
    breaker.record_failure("d", "provider_timeout")
    await breaker.drain()
    assert breaker.state("d").phase(clock()) == "open"
    assert await breaker.admit("d") == "deny"
    clock.now += 31  # cooldown over: half-open
    assert await breaker.admit("d") == "trial"
    assert await breaker.admit("d") == "deny"  # only one trial
    breaker.record_success("d")
    await breaker.drain()
    assert await breaker.admit("d") == "allow"
    await breaker.refresh(["d"])
    assert (breaker.state("d").state, breaker.state("d").failures) == ("closed", 0)


async def test_failed_trial_reopens(store: Any) -> None:
    clock = FakeClock()
    breaker = instance(store, clock)
    breaker.trip("d", "provider_authentication", 60)
    await breaker.drain()
    clock.now += 61
    assert await breaker.admit("d") == "trial"
    breaker.record_failure("d", "provider_authentication")
    await breaker.drain()
    await breaker.refresh(["d"])
    assert breaker.state("d").phase(clock()) == "open"
    assert breaker.state("d").open_until == pytest.approx(clock() + 30)


async def test_state_is_shared_between_instances_through_dynamodb(table: Table) -> None:
    clock = FakeClock()
    store = dynamo_store(table)
    first, second = instance(store, clock), instance(store, clock)
    await second.prepare(["d"])  # second has a (closed) cached view before the circuit opens
    first.record_failure("d", "provider_server_error")
    first.record_failure("d", "provider_server_error")
    await first.drain()
    assert await second.admit("d") == "allow"  # its cache is still fresh: no DynamoDB read
    third = instance(store, clock)
    await third.prepare(["d"])  # a cold instance reads the shared state
    assert await third.admit("d") == "deny"


async def test_stale_cache_refreshes_in_the_background(table: Table) -> None:
    clock = FakeClock()
    mono = FakeClock()
    store = dynamo_store(table)
    reader = CircuitBreaker(store, failure_threshold=1, cooldown_s=30, cache_ttl_s=5, clock=clock, monotonic=mono)
    await reader.prepare(["d"])
    writer = instance(store, clock)
    writer.trip("d", "probe_down", 300)
    await writer.drain()
    await reader.prepare(["d"])
    assert await reader.admit("d") == "allow"  # still fresh
    mono.now += 6
    await reader.prepare(["d"])  # stale: refresh scheduled, not awaited
    await reader.drain()
    assert await reader.admit("d") == "deny"


async def test_exactly_one_instance_wins_the_half_open_trial(table: Table) -> None:
    clock = FakeClock()
    store = dynamo_store(table)
    opener = instance(store, clock)
    opener.trip("d", "provider_overloaded", 10)
    await opener.drain()
    clock.now += 11
    fleet = [instance(store, clock) for _ in range(8)]
    for breaker in fleet:
        await breaker.prepare(["d"])
    # Eight instances race for the trial through moto's threaded server.
    verdicts = await asyncio.gather(*(b.admit("d") for b in fleet))
    assert sorted(verdicts) == ["deny"] * 7 + ["trial"]
