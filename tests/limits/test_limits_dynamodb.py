"""Rate limits, token budgets and stream leases against DynamoDB (moto server mode), with real races."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from chatcore import background, errors
from chatcore.auth import Principal
from chatcore.events import ErrorEvent, Event, Finish, TextDelta, Usage, UsageReport
from chatcore.limits.leases import StreamLeases
from chatcore.limits.limiter import DynamoDBLimiter
from chatcore.limits.policy import LimitPolicy, TierLimits
from chatcore.limits.rate_limiter import RateLimiter

from tests.moto_dynamodb import Table

NOW = 1_800_000_030.0  # fixed, mid-minute, so every racer falls in the same windows
THREADS = 16


def race(count: int, function, *args, **kwargs) -> list:  # type: ignore[no-untyped-def]
    """Run `function` `count` times at once from separate threads; return the results."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(function, *args, **kwargs) for _ in range(count)]
        return [future.result() for future in futures]


def limiter_for(table: Table, clock: list[float] | None = None, *, fail_open: frozenset[str] = frozenset(),
                table_name: str | None = None, **tier: int) -> DynamoDBLimiter:
    limits = {"requests_per_minute": 1000, "tokens_per_minute": 10**9, "tokens_per_day": 10**9,
              "concurrent_streams": 1000, **tier}
    clock = clock or [NOW]
    return DynamoDBLimiter(table_name or table.name, LimitPolicy({"free": TierLimits(**limits)}),
                           lambda: table.client, lease_ttl_s=60, fail_open=fail_open, clock=lambda: clock[0])


ALICE = Principal(user_id="alice", tier="free", method="test")


def minute_pk(user: str = "alice") -> str:
    return f"RL#{user}#m#{int(NOW // 60)}"


def day_pk(user: str = "alice") -> str:
    return RateLimiter.day_key(user, NOW)[0]["pk"]["S"]


# --- the raw checks under thread races -------------------------------------------------------


def test_requests_per_minute_exact_under_races(table: Table) -> None:
    rate = RateLimiter(table.name, lambda: table.client)
    results = race(THREADS, rate.charge_minute, "alice", NOW, max_requests=5, max_tokens=10**9, tokens=1)
    assert sum(r.allowed for r in results) == 5
    assert {r.exceeded for r in results if not r.allowed} == {"requests"}
    assert table.number(minute_pk(), "RL", "requests") == 5


def test_tokens_per_minute_exact_under_races(table: Table) -> None:
    rate = RateLimiter(table.name, lambda: table.client)
    results = race(THREADS, rate.charge_minute, "alice", NOW, max_requests=1000, max_tokens=1000, tokens=300)
    assert sum(r.allowed for r in results) == 3
    assert {r.exceeded for r in results if not r.allowed} == {"tokens"}
    assert table.number(minute_pk(), "RL", "tokens") == 900


def test_tokens_per_day_exact_under_races(table: Table) -> None:
    rate = RateLimiter(table.name, lambda: table.client)
    results = race(THREADS, rate.charge_day, "alice", NOW, max_tokens=1000, tokens=250)
    assert sum(r.allowed for r in results) == 4
    key, _, _ = RateLimiter.day_key("alice", NOW)
    assert table.number(key["pk"]["S"], "RL", "tokens") == 1000


def test_windows_are_per_user_and_per_minute(table: Table) -> None:
    rate = RateLimiter(table.name, lambda: table.client)
    assert rate.charge_minute("alice", NOW, max_requests=1, max_tokens=10, tokens=1).allowed
    assert not rate.charge_minute("alice", NOW, max_requests=1, max_tokens=10, tokens=1).allowed
    assert rate.charge_minute("bob", NOW, max_requests=1, max_tokens=10, tokens=1).allowed
    assert rate.charge_minute("alice", NOW + 60, max_requests=1, max_tokens=10, tokens=1).allowed


def test_leases_exact_under_races_and_released(table: Table) -> None:
    leases = StreamLeases(table.name, lambda: table.client, ttl_s=60)
    results = race(THREADS, leases.acquire, "alice", 3, NOW)
    granted = [r.lease_id for r in results if r.allowed]
    assert len(granted) == 3
    assert table.number("LEASE#alice", "LEASE", "n") == 3
    assert not leases.acquire("alice", 3, NOW).allowed
    leases.release("alice", granted[0])
    leases.release("alice", granted[0])  # a double release frees nothing more
    assert table.number("LEASE#alice", "LEASE", "n") == 2
    assert leases.acquire("alice", 3, NOW).allowed
    assert not leases.acquire("alice", 3, NOW).allowed


def test_expired_leases_are_reclaimed_exactly(table: Table) -> None:
    leases = StreamLeases(table.name, lambda: table.client, ttl_s=60)
    crashed = [leases.acquire("alice", 2, NOW) for _ in range(2)]  # never released: a crashed invocation
    assert all(r.allowed for r in crashed)
    refused = leases.acquire("alice", 2, NOW + 30)
    assert not refused.allowed and refused.active == 2 and refused.retry_after_s > 0
    # After the TTL both slots are free again, but racing callers still get exactly two.
    results = race(THREADS, leases.acquire, "alice", 2, NOW + 61)
    assert sum(r.allowed for r in results) == 2
    item = table.item("LEASE#alice", "LEASE") or {}
    assert int(item["n"]["N"]) == 2 == len([name for name in item if name.startswith("l_")])
    # The crashed invocation's late release must not free a slot someone else now holds.
    leases.release("alice", crashed[0].lease_id or "")
    assert table.number("LEASE#alice", "LEASE", "n") == 2


# --- the limiter: admission, settlement, headers, failures ------------------------------------------


async def test_admit_exactly_the_limit_concurrently(table: Table) -> None:
    limiter = limiter_for(table, requests_per_minute=4)
    outcomes = await asyncio.gather(*(limiter.admit(ALICE, 10) for _ in range(12)), return_exceptions=True)
    admitted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(admitted) == 4
    assert all(isinstance(o, errors.LimitExceededError) for o in refused)
    error = refused[0]
    assert isinstance(error, errors.LimitExceededError)
    assert error.headers["x-ratelimit-limit"] == "4"
    assert error.headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(error.headers["retry-after"]) <= 60
    assert error.details["limit"] == "requests_per_minute"
    remaining = sorted(int(a.headers["x-ratelimit-remaining"]) for a in admitted)  # type: ignore[union-attr]
    assert remaining == [0, 1, 2, 3]
    # Refused requests hold nothing: counters show only the admitted ones.
    assert table.number(minute_pk(), "RL", "requests") == 4
    assert table.number(minute_pk(), "RL", "tokens") == 40
    assert table.number("LEASE#alice", "LEASE", "n") == 4


async def test_stream_limit_refusal_undoes_the_other_reservations(table: Table) -> None:
    limiter = limiter_for(table, concurrent_streams=1)
    first = await limiter.admit(ALICE, 100)
    with pytest.raises(errors.LimitExceededError) as refused:
        await limiter.admit(ALICE, 100)
    assert refused.value.details["limit"] == "concurrent_streams"
    assert table.number(minute_pk(), "RL", "requests") == 1
    assert table.number(minute_pk(), "RL", "tokens") == 100
    await first.release()
    assert table.number("LEASE#alice", "LEASE", "n") == 0
    assert (await limiter.admit(ALICE, 100)).headers["x-ratelimit-remaining"] == "998"


async def test_request_larger_than_any_budget_is_a_client_error(table: Table) -> None:
    limiter = limiter_for(table, tokens_per_minute=1000)
    with pytest.raises(errors.RequestError):
        await limiter.admit(ALICE, 1001)


async def events(*items: Event, fail: BaseException | None = None) -> AsyncIterator[Event]:
    for item in items:
        yield item
    if fail is not None:
        raise fail


async def drain(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


async def test_settle_gives_back_unused_tokens(table: Table) -> None:
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 1000)
    got = await drain(admission.settle(events(TextDelta("hi"), Finish("stop", usage=Usage(120, 30)))))
    assert len(got) == 2
    assert table.number(minute_pk(), "RL", "tokens") == 150
    day_pk = RateLimiter.day_key("alice", NOW)[0]["pk"]["S"]
    assert table.number(day_pk, "RL", "tokens") == 150
    assert table.number("LEASE#alice", "LEASE", "n") == 0


async def test_without_reported_usage_the_estimated_input_and_the_output_seen_are_charged(table: Table) -> None:
    """Not the reservation (which holds the whole output cap): what was sent and what streamed."""
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 1000, output_cap=900)  # 100 tokens of prompt, 900 of output cap
    await drain(admission.settle(events(TextDelta("x" * 40), ErrorEvent("boom", "provider_error"))))
    assert table.number(minute_pk(), "RL", "tokens") == 100 + 10  # 40 characters: 10 tokens
    assert table.number(day_pk(), "RL", "tokens") == 110
    assert table.number("LEASE#alice", "LEASE", "n") == 0


async def test_reserving_more_for_a_longer_history_refuses_over_the_budget_and_holds_nothing(table: Table) -> None:
    limiter = limiter_for(table, tokens_per_minute=5_000)
    admission = await limiter.admit(ALICE, 1000, output_cap=500)
    await admission.reserve_more(1_000)
    other = await limiter.admit(ALICE, 2_500)  # another request of the same user
    assert table.number(minute_pk(), "RL", "tokens") == 4_500
    with pytest.raises(errors.LimitExceededError):
        await admission.reserve_more(1_000)  # within one request's bound, but over the minute's 5,000
    with pytest.raises(errors.RequestError):
        await admission.reserve_more(4_000)  # more than the plan allows one request at all
    assert table.number(minute_pk(), "RL", "tokens") == 4_500  # the refusals hold nothing
    await admission.release()
    await other.release()
    await background.drain()
    assert table.number(minute_pk(), "RL", "tokens") == 0 and table.number(day_pk(), "RL", "tokens") == 0


async def test_usage_report_before_an_error_is_used(table: Table) -> None:
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 1000)
    await drain(admission.settle(events(UsageReport(Usage(10, 5)), ErrorEvent("boom", "provider_error"))))
    assert table.number(minute_pk(), "RL", "tokens") == 15


async def test_lease_released_when_the_stream_raises(table: Table) -> None:
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 10)
    with pytest.raises(errors.ProviderTimeoutError):
        await drain(admission.settle(events(TextDelta("a"), fail=errors.ProviderTimeoutError("late"))))
    assert table.number("LEASE#alice", "LEASE", "n") == 0


async def test_lease_released_when_the_client_goes_away(table: Table) -> None:
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 10)
    stream = admission.settle(events(TextDelta("a"), TextDelta("b"), TextDelta("c")))
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # what Starlette does when the client disconnects
    assert table.number("LEASE#alice", "LEASE", "n") == 0


async def test_lease_released_when_cancelled_mid_stream(table: Table) -> None:
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 10)
    started = asyncio.Event()

    async def endless() -> AsyncIterator[Event]:
        yield TextDelta("a")
        started.set()
        await asyncio.Event().wait()
        yield TextDelta("never")

    task = asyncio.create_task(drain(admission.settle(endless())))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert table.number("LEASE#alice", "LEASE", "n") == 0


async def test_release_before_streaming_returns_tokens_but_counts_the_request(table: Table) -> None:
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 500)
    await admission.release()
    await admission.release()  # idempotent
    assert table.number(minute_pk(), "RL", "tokens") == 0
    assert table.number(minute_pk(), "RL", "requests") == 1
    assert table.number("LEASE#alice", "LEASE", "n") == 0


async def test_dynamodb_unavailable_fails_closed_by_default(table: Table) -> None:
    limiter = limiter_for(table, table_name="no-such-table")
    with pytest.raises(errors.ServiceUnavailableError):
        await limiter.admit(ALICE, 10)


async def test_dynamodb_unavailable_fails_open_when_configured(table: Table) -> None:
    limiter = limiter_for(table, table_name="no-such-table", fail_open=frozenset({"minute", "day", "streams"}))
    admission = await limiter.admit(ALICE, 10)
    assert admission.headers == {}
    await drain(admission.settle(events(Finish("stop", usage=Usage(1, 1)))))  # settles without raising


async def test_only_the_listed_limit_fails_open(table: Table) -> None:
    limiter = limiter_for(table, table_name="no-such-table", fail_open=frozenset({"streams"}))
    with pytest.raises(errors.ServiceUnavailableError):
        await limiter.admit(ALICE, 10)


def test_unknown_fail_open_name_is_rejected(table: Table) -> None:
    with pytest.raises(ValueError, match="LIMITS_FAIL_OPEN"):
        limiter_for(table, fail_open=frozenset({"budget"}))


async def test_settled_before_the_final_event_reaches_the_client(table: Table) -> None:
    """Encoders stop reading after the final event, so settlement cannot wait for the generator's end."""
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 1000)
    stream = admission.settle(events(TextDelta("a"), Finish("stop", usage=Usage(2, 3)), TextDelta("never read")))
    assert isinstance(await anext(stream), TextDelta)
    assert isinstance(await anext(stream), Finish)
    assert table.number("LEASE#alice", "LEASE", "n") == 0
    assert table.number(minute_pk(), "RL", "tokens") == 5
    await stream.aclose()
    assert table.number(minute_pk(), "RL", "tokens") == 5  # settled once only


def test_limits_json_overrides_and_validation() -> None:
    policy = LimitPolicy.from_json('{"free": {"requests_per_minute": 7}, "team": {"concurrent_streams": 9}}')
    assert policy.for_tier("free").requests_per_minute == 7
    assert policy.for_tier("free").tokens_per_day == LimitPolicy.from_json(None).for_tier("free").tokens_per_day
    assert policy.for_tier("team").concurrent_streams == 9
    assert policy.for_tier("unknown") == policy.for_tier("free")
    for bad in ("not json", "[]", '{"free": {"rpm": 1}}', '{"free": {"requests_per_minute": 0}}',
                '{"pro": {"tokens_per_day": "lots"}}'):
        with pytest.raises(ValueError):
            LimitPolicy.from_json(bad)
