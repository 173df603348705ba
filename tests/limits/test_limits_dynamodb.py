"""Rate limits, token budgets and stream leases against DynamoDB (moto server mode), with real races."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from chatcore import background, errors
from chatcore.auth import Principal
from chatcore.events import ErrorEvent, Event, Finish, TextDelta, Usage, UsageReport
from chatcore.limits.ledger import Admitted, LimitLedger, Refused
from chatcore.limits.limiter import DynamoDBLimiter
from chatcore.limits.policy import LimitPolicy, TierLimits

from tests.moto_dynamodb import Table, client

NOW = 1_800_000_030.0  # fixed, mid-minute, so every racer falls in the same windows
THREADS = 16
MINUTE, DAY = int(NOW // 60), int(NOW // 86_400)


def race(count: int, function, *args, **kwargs) -> list:  # type: ignore[no-untyped-def]
    """Run `function` `count` times at once from separate threads; return the results."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(function, *args, **kwargs) for _ in range(count)]
        return [future.result() for future in futures]


def tier(**limits: int) -> TierLimits:
    return TierLimits(**{"requests_per_minute": 1000, "tokens_per_minute": 10**9, "tokens_per_day": 10**9,
                         "concurrent_streams": 1000, **limits})


def limiter_for(table: Table, clock: list[float] | None = None, *, fail_open: frozenset[str] = frozenset(),
                table_name: str | None = None, **limits: int) -> DynamoDBLimiter:
    clock = clock or [NOW]
    return DynamoDBLimiter(table_name or table.name, LimitPolicy({"free": tier(**limits)}),
                           lambda: table.client, lease_ttl_s=60, fail_open=fail_open, clock=lambda: clock[0])


ALICE = Principal(user_id="alice", tier="free", method="test")


def limits_item(table: Table, user: str = "alice") -> dict:  # type: ignore[type-arg]
    return table.item(f"USER#{user}#LIMITS", "LIMITS") or {}


def counter(table: Table, name: str, user: str = "alice") -> int:
    return table.number(f"USER#{user}#LIMITS", "LIMITS", name)


def minute_requests(table: Table, minute: int = MINUTE) -> int:
    return counter(table, f"mr{minute}")


def minute_tokens(table: Table, minute: int = MINUTE) -> int:
    return counter(table, f"mt{minute}")


def day_tokens(table: Table, day: int = DAY) -> int:
    return counter(table, f"dt{day}")


def leases_held(table: Table, user: str = "alice") -> int:
    """The lease count, checked against the lease attributes it must always equal."""
    item = limits_item(table, user)
    count = int(item.get("n", {}).get("N", "0"))
    assert count == len([name for name in item if name.startswith("l_")]), item
    return count


class UpdateCounter:
    """Counts the DynamoDB requests a client sends (botocore hook, as bench/limits.py does)."""

    def __init__(self, dynamodb: object) -> None:
        self.names: list[str] = []
        dynamodb.meta.events.register("before-call.dynamodb", self._count)  # type: ignore[attr-defined]

    def _count(self, model: object, **_: object) -> None:
        self.names.append(model.name)  # type: ignore[attr-defined]

    def take(self) -> list[str]:
        names, self.names = self.names, []
        return names


# --- the ledger (one item per user) under thread races ----------------------------------------


def test_requests_per_minute_exact_under_races(table: Table) -> None:
    ledger = LimitLedger(table.name, lambda: table.client, lease_ttl_s=60)
    results = race(THREADS, ledger.admit, "alice", NOW, 1, tier(requests_per_minute=5))
    assert sum(isinstance(r, Admitted) for r in results) == 5
    assert {r.limit for r in results if isinstance(r, Refused)} == {"requests_per_minute"}
    assert minute_requests(table) == 5 and minute_tokens(table) == 5 and day_tokens(table) == 5
    assert leases_held(table) == 5  # refusals hold no lease either


def test_tokens_per_minute_exact_under_races(table: Table) -> None:
    ledger = LimitLedger(table.name, lambda: table.client, lease_ttl_s=60)
    results = race(THREADS, ledger.admit, "alice", NOW, 300, tier(tokens_per_minute=1000))
    assert sum(isinstance(r, Admitted) for r in results) == 3
    assert {r.limit for r in results if isinstance(r, Refused)} == {"tokens_per_minute"}
    assert minute_tokens(table) == 900 and minute_requests(table) == 3 and leases_held(table) == 3


def test_tokens_per_day_exact_under_races(table: Table) -> None:
    ledger = LimitLedger(table.name, lambda: table.client, lease_ttl_s=60)
    results = race(THREADS, ledger.admit, "alice", NOW, 250, tier(tokens_per_day=1000))
    assert sum(isinstance(r, Admitted) for r in results) == 4
    assert {r.limit for r in results if isinstance(r, Refused)} == {"tokens_per_day"}
    assert day_tokens(table) == 1000 and minute_requests(table) == 4


def test_windows_are_per_user_and_per_minute(table: Table) -> None:
    ledger = LimitLedger(table.name, lambda: table.client, lease_ttl_s=60)
    one = tier(requests_per_minute=1)
    assert isinstance(ledger.admit("alice", NOW, 1, one), Admitted)
    assert isinstance(ledger.admit("alice", NOW, 1, one), Refused)
    assert isinstance(ledger.admit("bob", NOW, 1, one), Admitted)
    assert isinstance(ledger.admit("alice", NOW + 60, 1, one), Admitted)


def test_leases_exact_under_races_and_released(table: Table) -> None:
    ledger = LimitLedger(table.name, lambda: table.client, lease_ttl_s=60)
    three = tier(concurrent_streams=3)
    results = race(THREADS, ledger.admit, "alice", NOW, 1, three)
    granted = [r for r in results if isinstance(r, Admitted)]
    assert len(granted) == 3
    assert {r.limit for r in results if isinstance(r, Refused)} == {"concurrent_streams"}
    assert leases_held(table) == 3 and minute_requests(table) == 3
    assert isinstance(ledger.admit("alice", NOW, 1, three), Refused)
    ledger.settle("alice", granted[0], 0)
    ledger.settle("alice", granted[0], 0)  # a double release frees nothing more
    assert leases_held(table) == 2
    assert isinstance(ledger.admit("alice", NOW, 1, three), Admitted)
    assert isinstance(ledger.admit("alice", NOW, 1, three), Refused)


def test_expired_leases_are_reclaimed_exactly(table: Table) -> None:
    ledger = LimitLedger(table.name, lambda: table.client, lease_ttl_s=60)
    two = tier(concurrent_streams=2)
    crashed = [ledger.admit("alice", NOW, 1, two) for _ in range(2)]  # never settled: a crashed invocation
    assert all(isinstance(r, Admitted) for r in crashed)
    refused = ledger.admit("alice", NOW + 30, 1, two)
    assert isinstance(refused, Refused) and refused.limit == "concurrent_streams" and refused.retry_after_s > 0
    # After the TTL both slots are free again, but racing callers still get exactly two.
    results = race(THREADS, ledger.admit, "alice", NOW + 61, 1, two)
    assert sum(isinstance(r, Admitted) for r in results) == 2
    assert leases_held(table) == 2
    # The crashed invocation's late settlement must not free a slot someone else now holds.
    first = crashed[0]
    assert isinstance(first, Admitted)
    ledger.settle("alice", first, -1)
    assert leases_held(table) == 2


def test_one_item_holds_every_limit_and_a_turn_is_two_updates(table: Table) -> None:
    """The issue-11 budget: one conditional UpdateItem admits, one settles, on one item per user."""
    dynamodb = client()
    counted = UpdateCounter(dynamodb)
    ledger = LimitLedger(table.name, lambda: dynamodb, lease_ttl_s=60)
    admitted = ledger.admit("alice", NOW, 400, tier())
    assert isinstance(admitted, Admitted)
    assert counted.take() == ["UpdateItem"]
    item = limits_item(table)
    lease = f"l_{admitted.lease_id}"
    assert set(item) == {"pk", "sk", "n", lease, f"mr{MINUTE}", f"mt{MINUTE}", f"dt{DAY}", "expires_at"}
    assert float(item[lease]["N"]) == NOW + 60
    assert int(item["expires_at"]["N"]) == (DAY + 2) * 86_400  # the day window's end plus a day
    ledger.settle("alice", admitted, -100)
    assert counted.take() == ["UpdateItem"]
    assert (minute_requests(table), minute_tokens(table), day_tokens(table), leases_held(table)) == (1, 300, 300, 0)


def test_the_item_costs_one_write_unit_even_with_every_enterprise_stream_open(table: Table) -> None:
    from devtools.capacity_units import item_size, write_units

    ledger = LimitLedger(table.name, lambda: table.client, lease_ttl_s=900)
    enterprise = LimitPolicy.from_json(None).for_tier("enterprise")
    user = "0f8e4c2a-1b3d-4e5f-8a9b-0c1d2e3f4a5b"  # as long as a Cognito sub
    held = [ledger.admit(user, NOW + index, 4_000, enterprise) for index in range(enterprise.concurrent_streams)]
    assert all(isinstance(h, Admitted) for h in held)
    assert isinstance(ledger.admit(user, NOW, 1, enterprise), Refused)
    item = limits_item(table, user)
    assert item_size(item) < 1024 and write_units(item, item) == 1


class WritesTwice:
    """A client whose every UpdateItem reaches DynamoDB twice: the SDK retrying a write whose answer was lost."""

    def __init__(self, real: object) -> None:
        self.real = real

    def update_item(self, **request: object) -> object:
        self.real.update_item(**request)  # type: ignore[attr-defined]
        return self.real.update_item(**request)  # type: ignore[attr-defined]


def test_a_retried_admit_or_settle_counts_once(table: Table) -> None:
    ledger = LimitLedger(table.name, lambda: WritesTwice(table.client), lease_ttl_s=60)
    admitted = ledger.admit("alice", NOW, 500, tier())
    assert isinstance(admitted, Admitted) and (admitted.requests, admitted.tokens) == (1, 500)
    assert (minute_requests(table), minute_tokens(table), day_tokens(table), leases_held(table)) == (1, 500, 500, 1)
    ledger.settle("alice", admitted, -200)
    assert (minute_tokens(table), day_tokens(table), leases_held(table)) == (300, 300, 0)
    ledger.settle("alice", admitted, -200)  # settling again (a lease already freed) changes nothing
    assert (minute_tokens(table), day_tokens(table), leases_held(table)) == (300, 300, 0)


def test_a_refusal_is_one_update_and_changes_nothing(table: Table) -> None:
    dynamodb = client()
    counted = UpdateCounter(dynamodb)
    ledger = LimitLedger(table.name, lambda: dynamodb, lease_ttl_s=60)
    assert isinstance(ledger.admit("alice", NOW, 600, tier(tokens_per_minute=1000)), Admitted)
    before, counted.names = limits_item(table), []
    refused = ledger.admit("alice", NOW, 600, tier(tokens_per_minute=1000))
    assert isinstance(refused, Refused) and refused.limit == "tokens_per_minute"
    assert (refused.requests, refused.tokens) == (1, 600)  # the minute as found: the 429's headers
    assert counted.take() == ["UpdateItem"]  # decided from the item as it was: no read, no undo
    assert limits_item(table) == before


def test_rollover_starts_fresh_windows_in_one_update_and_settling_removes_the_past(table: Table) -> None:
    """A new minute (and a new day) needs no read and no second try, even on a process that never
    saw the user: the counters are named after their window."""
    dynamodb = client()
    counted = UpdateCounter(dynamodb)
    ledger = LimitLedger(table.name, lambda: dynamodb, lease_ttl_s=60)
    limits = tier(requests_per_minute=2, tokens_per_minute=1000)
    for _ in range(2):
        first = ledger.admit("alice", NOW, 500, limits)
        assert isinstance(first, Admitted)
        ledger.settle("alice", first, 0)
    assert isinstance(ledger.admit("alice", NOW, 1, limits), Refused)  # the minute is full
    next_day = (DAY + 1) * 86_400 + 5.0
    counted.take()
    later = ledger.admit("alice", next_day, 500, limits)
    assert isinstance(later, Admitted) and (later.requests, later.tokens) == (1, 500)
    assert counted.take() == ["UpdateItem"]
    assert set(later.past) == {f"mr{MINUTE}", f"mt{MINUTE}", f"dt{DAY}"}
    ledger.settle("alice", later, 0)
    assert counted.take() == ["UpdateItem"]
    item = limits_item(table)
    new_minute, new_day = int(next_day // 60), int(next_day // 86_400)
    assert {name for name in item if name[:2] in ("mr", "mt", "dt")} == {f"mr{new_minute}", f"mt{new_minute}",
                                                                          f"dt{new_day}"}


def test_rollover_under_races_admits_exactly_the_new_windows_limit(table: Table) -> None:
    ledger = LimitLedger(table.name, lambda: table.client, lease_ttl_s=60)
    limits = tier(requests_per_minute=5)
    assert sum(isinstance(r, Admitted) for r in race(THREADS, ledger.admit, "alice", NOW, 1, limits)) == 5
    results = race(THREADS, ledger.admit, "alice", NOW + 60, 1, limits)
    assert sum(isinstance(r, Admitted) for r in results) == 5
    assert minute_requests(table, MINUTE + 1) == 5 and minute_requests(table) == 5 and day_tokens(table) == 10


def test_settling_after_a_rollover_drops_only_the_removed_windows_correction(table: Table) -> None:
    ledger = LimitLedger(table.name, lambda: table.client, lease_ttl_s=600)
    old = ledger.admit("alice", NOW, 1000, tier())
    assert isinstance(old, Admitted)
    new = ledger.admit("alice", NOW + 60, 10, tier())  # another process, a minute later
    assert isinstance(new, Admitted)
    ledger.settle("alice", new, 0)  # removes the past minute's counters it saw
    assert f"mt{MINUTE}" not in limits_item(table)
    ledger.settle("alice", old, -900)  # the old minute is gone: only the day takes the correction
    assert f"mt{MINUTE}" not in limits_item(table)
    assert day_tokens(table) == 1000 + 10 - 900 and leases_held(table) == 0


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
    assert minute_requests(table) == 4 and minute_tokens(table) == 40 and day_tokens(table) == 40
    assert leases_held(table) == 4


async def test_stream_limit_refusal_holds_nothing(table: Table) -> None:
    limiter = limiter_for(table, concurrent_streams=1)
    first = await limiter.admit(ALICE, 100)
    with pytest.raises(errors.LimitExceededError) as refused:
        await limiter.admit(ALICE, 100)
    assert refused.value.details["limit"] == "concurrent_streams"
    assert refused.value.headers["x-ratelimit-remaining"] == "999"  # the minute as found: one request
    assert minute_requests(table) == 1 and minute_tokens(table) == 100 and day_tokens(table) == 100
    await first.release()
    assert leases_held(table) == 0
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
    assert minute_tokens(table) == 150 and day_tokens(table) == 150
    assert leases_held(table) == 0


async def test_without_reported_usage_the_estimated_input_and_the_output_seen_are_charged(table: Table) -> None:
    """Not the reservation (which holds the whole output cap): what was sent and what streamed."""
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 1000, output_cap=900)  # 100 tokens of prompt, 900 of output cap
    await drain(admission.settle(events(TextDelta("x" * 40), ErrorEvent("boom", "provider_error"))))
    assert minute_tokens(table) == 100 + 10  # 40 characters: 10 tokens
    assert day_tokens(table) == 110
    assert leases_held(table) == 0


@pytest.mark.parametrize("ample", [False, True], ids=["written", "unwritten"])
async def test_a_later_steps_output_cap_is_held_but_never_charged_as_prompt(table: Table, ample: bool) -> None:
    """A tool step reserves its prompt and its output cap; without reported usage only the prompts
    sent and the output seen are charged, whether the step's top-up was written or (ample headroom) not."""
    # 9,000 left after the admission is no room for 1,100 more on each of 1,000 streams: written.
    limiter = limiter_for(table) if ample else limiter_for(table, tokens_per_minute=10_000)
    admission = await limiter.admit(ALICE, 1000, output_cap=900)  # step 1: 100 of prompt, 900 of output cap
    await admission.reserve_more(1_100, prompt_tokens=200)  # step 2: 200 of prompt, 900 of output cap
    held = 1_000 if ample else 2_100
    assert minute_tokens(table) == held
    await admission.reserve_more(-500, prompt_tokens=300)  # step 3: the earlier steps left enough unused
    assert minute_tokens(table) == held
    await drain(admission.settle(events(TextDelta("x" * 40), ErrorEvent("boom", "provider_error"))))
    assert minute_tokens(table) == 100 + 200 + 300 + 10  # the three prompts, and 40 characters of output
    assert leases_held(table) == 0


async def test_reserving_more_for_a_longer_history_refuses_over_the_budget_and_holds_nothing(table: Table) -> None:
    limiter = limiter_for(table, tokens_per_minute=5_000)
    admission = await limiter.admit(ALICE, 1000, output_cap=500)
    await admission.reserve_more(1_000)
    other = await limiter.admit(ALICE, 2_500)  # another request of the same user
    assert minute_tokens(table) == 4_500
    with pytest.raises(errors.LimitExceededError):
        await admission.reserve_more(1_000)  # within one request's bound, but over the minute's 5,000
    with pytest.raises(errors.RequestError):
        await admission.reserve_more(4_000)  # more than the plan allows one request at all
    assert minute_tokens(table) == 4_500  # the refusals hold nothing
    await admission.release()
    await other.release()
    await background.drain()
    assert minute_tokens(table) == 0 and day_tokens(table) == 0


def counted_limiter(table: Table, **limits: int) -> tuple[DynamoDBLimiter, UpdateCounter]:
    """A limiter on a client of its own, whose DynamoDB requests are counted."""
    dynamodb = client()
    counted = UpdateCounter(dynamodb)
    limiter = DynamoDBLimiter(table.name, LimitPolicy({"free": tier(**limits)}), lambda: dynamodb,
                              lease_ttl_s=60, clock=lambda: NOW)
    return limiter, counted


async def test_a_top_up_every_open_stream_could_take_is_not_written_and_the_usage_is_settled(table: Table) -> None:
    """Admitted with 90,000 of the minute's 100,000 left and 2 streams allowed: up to 4,500 more (in
    all) fits both streams ten times over, so it stays unwritten; the settlement charges the usage
    (used - held)."""
    limiter, counted = counted_limiter(table, tokens_per_minute=100_000, concurrent_streams=2)
    admission = await limiter.admit(ALICE, 10_000)
    assert counted.take() == ["UpdateItem"]
    await admission.reserve_more(2_500)
    await admission.reserve_more(2_000)  # 4,500 unwritten: 2 streams x 10 x 4,500 = the headroom seen
    assert counted.take() == []
    assert (minute_tokens(table), day_tokens(table)) == (10_000, 10_000)
    assert admission.headers["x-ratelimit-remaining-tokens"] == str(100_000 - 10_000 - 4_500)  # unwritten counted
    await admission.reserve_more(1)  # 4,501 unwritten would not fit: this one is written
    assert counted.take() == ["UpdateItem"]
    assert (minute_tokens(table), day_tokens(table)) == (10_001, 10_001)
    assert admission.headers["x-ratelimit-remaining-tokens"] == str(100_000 - 10_001 - 4_500)
    await drain(admission.settle(events(Finish("stop", usage=Usage(14_000, 700)))))
    assert counted.take() == ["UpdateItem"]
    # The item held 10,001 for the turn, so it is charged 4,699 more: the reported 14,700, not the 14,501 reserved.
    assert (minute_tokens(table), day_tokens(table), leases_held(table)) == (14_700, 14_700, 0)


async def test_settling_after_an_unwritten_top_up_corrects_only_what_the_item_holds(table: Table) -> None:
    limiter = limiter_for(table)  # a billion tokens: every top-up here stays unwritten
    admission = await limiter.admit(ALICE, 1_000)
    await admission.reserve_more(3_000)
    other = await limiter.admit(ALICE, 500)
    assert minute_tokens(table) == 1_500
    await drain(admission.settle(events(Finish("stop", usage=Usage(2_000, 500)))))
    assert (minute_tokens(table), day_tokens(table)) == (500 + 2_500, 500 + 2_500)  # 1,500 more than held
    failed = await limiter.admit(ALICE, 1_000)
    await failed.reserve_more(2_000)
    await failed.release()  # gives back the 1,000 the item holds, not the 3,000 reserved
    await other.release()
    assert (minute_tokens(table), day_tokens(table), leases_held(table)) == (2_500, 2_500, 0)


@pytest.mark.parametrize("limit", ["tokens_per_minute", "tokens_per_day"])
async def test_near_the_limit_a_top_up_is_written_and_refused_when_it_does_not_fit(table: Table, limit: str) -> None:
    limiter, counted = counted_limiter(table, concurrent_streams=2, **{limit: 10_000})
    admission = await limiter.admit(ALICE, 1_000)  # 9,000 left: 2 streams could not both take 5,000 more
    counted.take()
    await admission.reserve_more(5_000)
    assert counted.take() == ["UpdateItem"]
    assert (minute_tokens(table), day_tokens(table)) == (6_000, 6_000)
    other = await limiter.admit(ALICE, 3_500)  # the same user's other stream: 9,500 of 10,000
    counted.take()
    with pytest.raises(errors.LimitExceededError) as refused:
        # Not ample (2 x 10 x 2,500 > 4,000 left after the last top-up): written, and it does not fit.
        await admission.reserve_more(2_500)
    assert refused.value.status_code == 429 and refused.value.details["limit"] == limit
    assert counted.take() == ["UpdateItem"]
    assert (minute_tokens(table), day_tokens(table)) == (9_500, 9_500)  # the refusal holds nothing
    await other.release()
    await drain(admission.settle(events(Finish("stop", usage=Usage(5_000, 500)))))
    assert (minute_tokens(table), day_tokens(table), leases_held(table)) == (5_500, 5_500, 0)


async def test_usage_report_before_an_error_is_used(table: Table) -> None:
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 1000)
    await drain(admission.settle(events(UsageReport(Usage(10, 5)), ErrorEvent("boom", "provider_error"))))
    assert minute_tokens(table) == 15


async def test_lease_released_when_the_stream_raises(table: Table) -> None:
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 10)
    with pytest.raises(errors.ProviderTimeoutError):
        await drain(admission.settle(events(TextDelta("a"), fail=errors.ProviderTimeoutError("late"))))
    assert leases_held(table) == 0


async def test_lease_released_when_the_client_goes_away(table: Table) -> None:
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 10)
    stream = admission.settle(events(TextDelta("a"), TextDelta("b"), TextDelta("c")))
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # what Starlette does when the client disconnects
    assert leases_held(table) == 0


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
    assert leases_held(table) == 0


async def test_release_before_streaming_returns_tokens_but_counts_the_request(table: Table) -> None:
    limiter = limiter_for(table)
    admission = await limiter.admit(ALICE, 500)
    await admission.release()
    await admission.release()  # idempotent
    assert minute_tokens(table) == 0
    assert minute_requests(table) == 1
    assert leases_held(table) == 0


async def test_dynamodb_unavailable_fails_closed_by_default(table: Table) -> None:
    limiter = limiter_for(table, table_name="no-such-table")
    with pytest.raises(errors.ServiceUnavailableError):
        await limiter.admit(ALICE, 10)


async def test_dynamodb_unavailable_fails_open_when_configured(table: Table) -> None:
    limiter = limiter_for(table, table_name="no-such-table", fail_open=frozenset({"minute", "day", "streams"}))
    admission = await limiter.admit(ALICE, 10)
    assert admission.headers == {}
    await drain(admission.settle(events(Finish("stop", usage=Usage(1, 1)))))  # settles without raising


async def test_one_write_checks_every_limit_so_failing_open_needs_every_limit_listed(table: Table) -> None:
    """A partial list fails closed: letting the request through would skip the limits that must not."""
    for listed in ({"streams"}, {"minute", "day"}):
        limiter = limiter_for(table, table_name="no-such-table", fail_open=frozenset(listed))
        with pytest.raises(errors.ServiceUnavailableError):
            await limiter.admit(ALICE, 10)


async def test_reserving_more_is_one_update_and_fails_like_the_admission(table: Table) -> None:
    dynamodb = client()
    counted = UpdateCounter(dynamodb)
    limiter = DynamoDBLimiter(table.name, LimitPolicy({"free": tier(tokens_per_day=4_000)}), lambda: dynamodb,
                              lease_ttl_s=60, clock=lambda: NOW)
    admission = await limiter.admit(ALICE, 1000)
    counted.take()
    await admission.reserve_more(1_000)
    assert counted.take() == ["UpdateItem"]
    assert admission.headers["x-ratelimit-remaining-tokens"] == str(10**9 - 2_000)
    other = await limiter.admit(ALICE, 1_500)  # the same user's next request: 3,500 of the day's 4,000
    counted.take()
    with pytest.raises(errors.LimitExceededError) as refused:
        await admission.reserve_more(800)
    assert refused.value.details["limit"] == "tokens_per_day"  # the budget that refused is named
    assert counted.take() == ["UpdateItem"]
    await other.release()
    assert day_tokens(table) == 2_000 and minute_tokens(table) == 2_000
    await drain(admission.settle(events(Finish("stop", usage=Usage(1_200, 300)))))
    assert counted.take() == ["UpdateItem", "UpdateItem"]  # the other's release, this settlement
    assert (minute_tokens(table), day_tokens(table), leases_held(table)) == (1_500, 1_500, 0)
    admission = await limiter.admit(ALICE, 100)
    limiter.ledger.table_name = "no-such-table"  # DynamoDB fails after the admission
    with pytest.raises(errors.ServiceUnavailableError):
        await admission.reserve_more(10)


async def test_reserving_more_after_the_minute_rolled_over_charges_the_day_only(table: Table) -> None:
    clock = [NOW]
    limiter = limiter_for(table, clock, tokens_per_minute=3_000)
    admission = await limiter.admit(ALICE, 1_000)
    full = await limiter.admit(ALICE, 1_500)  # the minute holds 2,500 of 3,000
    clock[0] = NOW + 60
    later = await limiter.admit(ALICE, 1_000)
    await later.release()  # its settlement removes the past minute's counters
    await admission.reserve_more(800)  # over the old minute's 3,000, but that minute is over
    assert day_tokens(table) == 1_000 + 1_500 + 800 and minute_tokens(table, MINUTE + 1) == 0
    assert minute_tokens(table) == 0  # the old minute's counter is gone, not recreated
    await full.release()
    await admission.release()
    assert day_tokens(table) == 0 and leases_held(table) == 0


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
    assert leases_held(table) == 0
    assert minute_tokens(table) == 5
    await stream.aclose()
    assert minute_tokens(table) == 5  # settled once only


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
