"""A circuit breaker per deployment, shared by every Lambda instance through DynamoDB.

States: closed (traffic flows) -> open after `failure_threshold` consecutive failures or
timeouts, or at once for a failure that waiting will not fix (bad key, exhausted quota, a probe
that found the provider down) -> half-open when the cooldown ends: exactly one caller, fleet-wide,
wins a conditional update that claims the trial; its success closes the circuit, its failure
reopens it.

Each instance reads the shared state through a short-lived in-process cache: a warm instance
serves from the cache and refreshes stale entries in the background, so the hot path adds no
DynamoDB read on most requests. Failures and successes update the cache at once and are written
in background tasks, off the critical path. Only claiming a half-open trial waits for DynamoDB,
because that is the race that matters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from chatcore import background
from chatcore.dynamodb import client_for
from chatcore.observability import get_logger
from chatcore.settings import Settings

Phase = Literal["closed", "open", "half_open"]
Verdict = Literal["allow", "trial", "deny"]

ITEM_TTL_S = 7 * 24 * 3600  # forgotten deployments (e.g. ad-hoc names) age out of the table


@dataclass(frozen=True, slots=True)
class BreakerState:
    """The shared state of one deployment's circuit. Times are epoch seconds."""

    state: Literal["closed", "open"] = "closed"
    failures: int = 0  # consecutive
    open_until: float = 0.0
    trial_until: float = 0.0  # lease of a claimed half-open trial
    reason: str = ""
    updated_at: float = 0.0
    version: int = 0  # bumped by every stored write (optimistic concurrency)

    def phase(self, now: float) -> Phase:
        if self.state == "closed":
            return "closed"
        return "open" if now < self.open_until else "half_open"

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"state": self.phase(now), "failures": self.failures, "reason": self.reason,
                "openUntil": self.open_until or None, "updatedAt": self.updated_at or None}


CLOSED = BreakerState()


# --- the state machine, written once ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """A transient failure or timeout: opens the circuit at `threshold` consecutive ones."""

    reason: str
    threshold: int
    cooldown_s: float


@dataclass(frozen=True, slots=True)
class Trip:
    """A failure waiting will not fix (bad key, exhausted quota, a failed probe): open at once."""

    reason: str
    cooldown_s: float


@dataclass(frozen=True, slots=True)
class Success:
    """A call succeeded: the circuit closes."""


@dataclass(frozen=True, slots=True)
class ClaimTrial:
    """Claim the one half-open trial call, leased for `lease_s`."""

    lease_s: float


BreakerEvent = Failure | Trip | Success | ClaimTrial


def transition(state: BreakerState, event: BreakerEvent, now: float) -> BreakerState | None:
    """The state after `event` at `now`, or None when the event does not apply (a trial already
    claimed, or a circuit not half-open). Pure: both stores and the local cache use it."""
    if isinstance(event, Failure):
        failed = replace(state, failures=state.failures + 1, reason=event.reason, updated_at=now)
        if failed.failures >= event.threshold and (failed.state == "closed" or now >= failed.open_until):
            failed = replace(failed, state="open", open_until=now + event.cooldown_s, trial_until=0.0)
        return failed
    if isinstance(event, Trip):
        return replace(state, state="open", failures=state.failures + 1, open_until=now + event.cooldown_s,
                       trial_until=0.0, reason=event.reason, updated_at=now)
    if isinstance(event, Success):
        return BreakerState(updated_at=now, version=state.version)
    if state.phase(now) != "half_open" or state.trial_until > now:
        return None
    return replace(state, trial_until=now + event.lease_s)


class BreakerStore(Protocol):
    """Where breaker states live. `apply` is atomic per deployment."""

    async def load(self, names: list[str]) -> dict[str, BreakerState]: ...

    async def apply(self, name: str, event: BreakerEvent, now: float,
                    expected: BreakerState) -> BreakerState | None:
        """Apply `event` to the stored state (`expected` is the caller's best guess of it); return
        the new state, or None if the event did not apply."""
        ...


class InMemoryBreakerStore:
    """One process's breaker states: for local use and tests without a table."""

    def __init__(self) -> None:
        self.states: dict[str, BreakerState] = {}

    async def load(self, names: list[str]) -> dict[str, BreakerState]:
        return {n: self.states[n] for n in names if n in self.states}

    async def apply(self, name: str, event: BreakerEvent, now: float,
                    expected: BreakerState) -> BreakerState | None:
        new = transition(self.states.get(name, CLOSED), event, now)
        if new is not None:
            self.states[name] = new
        return new


def _state_from_item(item: dict[str, Any]) -> BreakerState:
    def num(key: str) -> float:
        return float(item[key]["N"]) if key in item else 0.0

    return BreakerState(
        state="open" if item.get("state", {}).get("S") == "open" else "closed",
        failures=int(num("failures")), open_until=num("open_until"), trial_until=num("trial_until"),
        reason=item.get("reason", {}).get("S", ""), updated_at=num("updated_at"), version=int(num("version")),
    )


_WRITE_ATTEMPTS = 5


class DynamoBreakerStore:
    """Breaker states as items `pk=BREAKER#<deployment>`, `sk=STATE` in the one table.

    Every transition is one conditional `PutItem` of the state `transition` computes, guarded by the
    version it was computed from; a writer that lost a race gets the current item back
    (`ReturnValuesOnConditionCheckFailure`) and computes again.
    """

    def __init__(self, table: str, client_factory: Callable[[], Any]) -> None:
        self.table = table
        self._client_factory = client_factory

    @staticmethod
    def key(name: str) -> dict[str, Any]:
        return {"pk": {"S": f"BREAKER#{name}"}, "sk": {"S": "STATE"}}

    def _load(self, names: list[str]) -> dict[str, BreakerState]:
        client = self._client_factory()
        out: dict[str, BreakerState] = {}
        for start in range(0, len(names), 100):  # BatchGetItem takes at most 100 keys
            request = {self.table: {"Keys": [self.key(n) for n in names[start:start + 100]],
                                    "ConsistentRead": False}}
            while request:
                response = client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    out[item["pk"]["S"].removeprefix("BREAKER#")] = _state_from_item(item)
                request = response.get("UnprocessedKeys") or {}
        return out

    async def load(self, names: list[str]) -> dict[str, BreakerState]:
        return await asyncio.to_thread(self._load, names)

    def _item(self, name: str, state: BreakerState, now: float) -> dict[str, Any]:
        return {
            **self.key(name), "state": {"S": state.state}, "failures": {"N": str(state.failures)},
            "open_until": {"N": repr(state.open_until)}, "trial_until": {"N": repr(state.trial_until)},
            "reason": {"S": state.reason}, "updated_at": {"N": repr(state.updated_at)},
            "version": {"N": str(state.version)}, "expires_at": {"N": str(int(now) + ITEM_TTL_S)},
        }

    def _apply(self, name: str, event: BreakerEvent, now: float, expected: BreakerState) -> BreakerState | None:
        client = self._client_factory()
        current = expected
        for _ in range(_WRITE_ATTEMPTS):
            new = transition(current, event, now)
            if new is None:
                return None
            new = replace(new, version=current.version + 1)
            if current.version:
                condition = {"ConditionExpression": "version = :v",
                             "ExpressionAttributeValues": {":v": {"N": str(current.version)}}}
            else:
                condition = {"ConditionExpression": "attribute_not_exists(pk) OR attribute_not_exists(version)"}
            try:
                client.put_item(TableName=self.table, Item=self._item(name, new, now),
                                ReturnValuesOnConditionCheckFailure="ALL_OLD", **condition)
                return new
            except client.exceptions.ConditionalCheckFailedException as exc:
                item = exc.response.get("Item")
                if item is None:  # an emulator that does not return the item: read it
                    item = client.get_item(TableName=self.table, Key=self.key(name),
                                           ConsistentRead=True).get("Item")
                current = _state_from_item(item) if item else CLOSED
        return None

    async def apply(self, name: str, event: BreakerEvent, now: float,
                    expected: BreakerState) -> BreakerState | None:
        return await asyncio.to_thread(self._apply, name, event, now, expected)


def breaker_store(settings: Settings) -> BreakerStore:
    """DynamoDB when a table is configured, else in-memory (see `BREAKER_STORE`)."""
    if settings.breaker_store == "dynamodb":
        return DynamoBreakerStore(
            settings.table_name, lambda: client_for(settings, critical=True))
    return InMemoryBreakerStore()


class CircuitBreaker:
    """Admission and bookkeeping for every deployment's circuit, with an in-process cache."""

    def __init__(self, store: BreakerStore, *, failure_threshold: int = 3, cooldown_s: float = 30.0,
                 cache_ttl_s: float = 5.0, trial_lease_s: float = 30.0,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.cache_ttl_s = cache_ttl_s
        self.trial_lease_s = trial_lease_s
        self._clock = clock
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, BreakerState]] = {}  # name -> (fetched at, state)
        self._refreshing = False

    def now(self) -> float:
        return self._clock()

    def state(self, name: str) -> BreakerState:
        """The cached state (closed when unknown)."""
        entry = self._cache.get(name)
        return entry[1] if entry else CLOSED

    async def refresh(self, names: Iterable[str]) -> None:
        """Read the shared state of `names` now (cold cache, health endpoint, tests)."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return
        loaded = await self.store.load(wanted)
        fetched = self._monotonic()
        for name in wanted:
            self._cache[name] = (fetched, loaded.get(name, CLOSED))

    async def prepare(self, names: Iterable[str]) -> None:
        """Make the cache usable for `names`: wait only for names never read; refresh stale ones later."""
        now = self._monotonic()
        missing: list[str] = []
        stale: list[str] = []
        for name in names:
            entry = self._cache.get(name)
            if entry is None:
                missing.append(name)
            elif now - entry[0] >= self.cache_ttl_s:
                stale.append(name)
        if missing:
            try:
                await self.refresh(missing + stale)
            except Exception:  # the breaker must never fail a request: assume closed
                get_logger().warning("breaker state unavailable", extra={"deployments": missing})
                for name in missing:
                    self._cache[name] = (now, CLOSED)
        elif stale and not self._refreshing:
            self._refreshing = True
            background.spawn(self._refresh_quietly(stale))

    async def _refresh_quietly(self, names: list[str]) -> None:
        try:
            await self.refresh(names)
        finally:
            self._refreshing = False

    async def admit(self, name: str) -> Verdict:
        """Whether a call to `name` may go ahead now: allowed, as the half-open trial, or denied."""
        state = self.state(name)
        now = self._clock()
        phase = state.phase(now)
        if phase == "closed":
            return "allow"
        if phase == "open" or state.trial_until > now:
            return "deny"
        event = ClaimTrial(self.trial_lease_s)
        try:
            claimed = await self.store.apply(name, event, now, state)
        except Exception:
            get_logger().warning("breaker trial claim failed", extra={"deployment": name})
            return "deny"
        self._put(name, claimed or transition(state, event, now) or state)
        return "trial" if claimed else "deny"

    def is_open(self, name: str) -> bool:
        """Whether a call to `name` would be denied now (open, or its half-open trial taken)."""
        state = self.state(name)
        now = self._clock()
        return state.phase(now) == "open" or (state.phase(now) == "half_open" and state.trial_until > now)

    def retry_at(self, name: str) -> float | None:
        """When an open circuit for `name` turns half-open (epoch seconds), if it is open."""
        state = self.state(name)
        return state.open_until if state.phase(self._clock()) == "open" else None

    def record_success(self, name: str) -> None:
        """A call succeeded: close the circuit (written only if it was not already clean)."""
        state = self.state(name)
        if state.state == "closed" and state.failures == 0:
            return
        self._record(name, Success())

    def record_failure(self, name: str, reason: str, cooldown_s: float | None = None) -> None:
        """A transient failure or timeout: counts towards opening the circuit."""
        cooldown = self.cooldown_s if cooldown_s is None else cooldown_s
        self._record(name, Failure(reason, self.failure_threshold, cooldown))

    def trip(self, name: str, reason: str, cooldown_s: float | None = None) -> None:
        """Open the circuit at once (bad key, exhausted quota, provider found down)."""
        self._record(name, Trip(reason, self.cooldown_s if cooldown_s is None else cooldown_s))

    def _record(self, name: str, event: BreakerEvent) -> None:
        """Apply `event` to the cached state now, and to the shared state in the background."""
        now = self._clock()
        state = self.state(name)
        local = transition(state, event, now)
        if local is not None:
            self._put(name, local)
        background.spawn(self._write(name, self.store.apply(name, event, now, state)))

    def _put(self, name: str, state: BreakerState) -> None:
        self._cache[name] = (self._monotonic(), state)

    async def _write(self, name: str, write: Any) -> None:
        try:
            state = await write
        except Exception:
            get_logger().warning("breaker write failed", extra={"deployment": name})
            return
        if isinstance(state, BreakerState):
            self._put(name, state)

    async def drain(self) -> None:
        """Wait for the pending shared-state writes (the health function, tests)."""
        await background.drain()
