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

    def phase(self, now: float) -> Phase:
        if self.state == "closed":
            return "closed"
        return "open" if now < self.open_until else "half_open"

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"state": self.phase(now), "failures": self.failures, "reason": self.reason,
                "openUntil": self.open_until or None, "updatedAt": self.updated_at or None}


CLOSED = BreakerState()


class BreakerStore(Protocol):
    """Where breaker states live. Every method is atomic per deployment."""

    async def load(self, names: list[str]) -> dict[str, BreakerState]: ...

    async def add_failure(self, name: str, reason: str, now: float, threshold: int,
                          cooldown_s: float) -> BreakerState: ...

    async def trip(self, name: str, reason: str, now: float, cooldown_s: float) -> BreakerState: ...

    async def close(self, name: str, now: float) -> BreakerState: ...

    async def claim_trial(self, name: str, now: float, lease_s: float) -> bool: ...


class InMemoryBreakerStore:
    """One process's breaker states: for local use and tests without a table."""

    def __init__(self) -> None:
        self.states: dict[str, BreakerState] = {}

    async def load(self, names: list[str]) -> dict[str, BreakerState]:
        return {n: self.states[n] for n in names if n in self.states}

    async def add_failure(self, name: str, reason: str, now: float, threshold: int,
                          cooldown_s: float) -> BreakerState:
        current = self.states.get(name, CLOSED)
        state = replace(current, failures=current.failures + 1, reason=reason, updated_at=now)
        if state.failures >= threshold and (state.state == "closed" or now >= state.open_until):
            state = replace(state, state="open", open_until=now + cooldown_s, trial_until=0.0)
        self.states[name] = state
        return state

    async def trip(self, name: str, reason: str, now: float, cooldown_s: float) -> BreakerState:
        current = self.states.get(name, CLOSED)
        state = replace(current, state="open", failures=current.failures + 1, open_until=now + cooldown_s,
                        trial_until=0.0, reason=reason, updated_at=now)
        self.states[name] = state
        return state

    async def close(self, name: str, now: float) -> BreakerState:
        self.states[name] = BreakerState(updated_at=now)
        return self.states[name]

    async def claim_trial(self, name: str, now: float, lease_s: float) -> bool:
        current = self.states.get(name, CLOSED)
        if current.phase(now) != "half_open" or current.trial_until > now:
            return False
        self.states[name] = replace(current, trial_until=now + lease_s)
        return True


def _state_from_item(item: dict[str, Any]) -> BreakerState:
    def num(key: str) -> float:
        return float(item[key]["N"]) if key in item else 0.0

    return BreakerState(
        state="open" if item.get("state", {}).get("S") == "open" else "closed",
        failures=int(num("failures")), open_until=num("open_until"), trial_until=num("trial_until"),
        reason=item.get("reason", {}).get("S", ""), updated_at=num("updated_at"),
    )


class DynamoBreakerStore:
    """Breaker states as items `pk=BREAKER#<deployment>`, `sk=STATE` in the one table."""

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

    def _update(self, name: str, expression: str, values: dict[str, Any], condition: str | None = None,
                names: dict[str, str] | None = None) -> BreakerState | None:
        client = self._client_factory()
        args: dict[str, Any] = {
            "TableName": self.table, "Key": self.key(name), "UpdateExpression": expression,
            "ExpressionAttributeValues": values, "ReturnValues": "ALL_NEW",
            "ExpressionAttributeNames": {"#s": "state", **(names or {})},
        }
        if condition:
            args["ConditionExpression"] = condition
        try:
            response = client.update_item(**args)
        except client.exceptions.ConditionalCheckFailedException:
            return None
        return _state_from_item(response.get("Attributes", {}))

    async def add_failure(self, name: str, reason: str, now: float, threshold: int,
                          cooldown_s: float) -> BreakerState:
        def run() -> BreakerState:
            common = {":now": {"N": repr(now)}, ":reason": {"S": reason},
                      ":exp": {"N": str(int(now) + ITEM_TTL_S)}}
            counted = self._update(
                name, "ADD failures :one SET reason = :reason, updated_at = :now, expires_at = :exp, "
                      "#s = if_not_exists(#s, :closed)",
                {**common, ":one": {"N": "1"}, ":closed": {"S": "closed"}})
            assert counted is not None
            if counted.failures < threshold:
                return counted
            # Open, unless another caller already opened it for a cooldown still running.
            opened = self._update(
                name, "SET #s = :open, open_until = :until REMOVE trial_until",
                {":open": {"S": "open"}, ":until": {"N": repr(now + cooldown_s)}, ":now": {"N": repr(now)},
                 ":n": {"N": str(threshold)}},
                condition="failures >= :n AND (#s <> :open OR open_until <= :now)")
            return opened or counted

        return await asyncio.to_thread(run)

    async def trip(self, name: str, reason: str, now: float, cooldown_s: float) -> BreakerState:
        def run() -> BreakerState:
            state = self._update(
                name, "SET #s = :open, open_until = :until, reason = :reason, updated_at = :now, "
                      "expires_at = :exp ADD failures :one REMOVE trial_until",
                {":open": {"S": "open"}, ":until": {"N": repr(now + cooldown_s)}, ":reason": {"S": reason},
                 ":now": {"N": repr(now)}, ":one": {"N": "1"}, ":exp": {"N": str(int(now) + ITEM_TTL_S)}})
            assert state is not None
            return state

        return await asyncio.to_thread(run)

    async def close(self, name: str, now: float) -> BreakerState:
        def run() -> BreakerState:
            state = self._update(
                name, "SET #s = :closed, failures = :zero, open_until = :zero, reason = :empty, "
                      "updated_at = :now, expires_at = :exp REMOVE trial_until",
                {":closed": {"S": "closed"}, ":zero": {"N": "0"}, ":empty": {"S": ""}, ":now": {"N": repr(now)},
                 ":exp": {"N": str(int(now) + ITEM_TTL_S)}})
            assert state is not None
            return state

        return await asyncio.to_thread(run)

    async def claim_trial(self, name: str, now: float, lease_s: float) -> bool:
        def run() -> bool:
            claimed = self._update(
                name, "SET trial_until = :lease",
                {":lease": {"N": repr(now + lease_s)}, ":now": {"N": repr(now)}, ":open": {"S": "open"}},
                condition="#s = :open AND open_until <= :now "
                          "AND (attribute_not_exists(trial_until) OR trial_until <= :now)")
            return claimed is not None

        return await asyncio.to_thread(run)


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
        self._tasks: set[asyncio.Task[None]] = set()
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
            self._background(self._refresh_quietly(stale))

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
        try:
            claimed = await self.store.claim_trial(name, now, self.trial_lease_s)
        except Exception:
            get_logger().warning("breaker trial claim failed", extra={"deployment": name})
            return "deny"
        self._put(name, replace(state, trial_until=now + self.trial_lease_s))
        return "trial" if claimed else "deny"

    def retry_at(self, name: str) -> float | None:
        """When an open circuit for `name` turns half-open (epoch seconds), if it is open."""
        state = self.state(name)
        return state.open_until if state.phase(self._clock()) == "open" else None

    def record_success(self, name: str) -> None:
        """A call succeeded: close the circuit (written only if it was not already clean)."""
        state = self.state(name)
        if state.state == "closed" and state.failures == 0:
            return
        now = self._clock()
        self._put(name, BreakerState(updated_at=now))
        self._background(self._write(name, self.store.close(name, now)))

    def record_failure(self, name: str, reason: str) -> None:
        """A transient failure or timeout: counts towards opening the circuit."""
        now = self._clock()
        state = self.state(name)
        local = replace(state, failures=state.failures + 1, reason=reason, updated_at=now)
        if local.failures >= self.failure_threshold and (local.state == "closed" or now >= local.open_until):
            local = replace(local, state="open", open_until=now + self.cooldown_s, trial_until=0.0)
        self._put(name, local)
        self._background(self._write(name, self.store.add_failure(
            name, reason, now, self.failure_threshold, self.cooldown_s)))

    def trip(self, name: str, reason: str, cooldown_s: float | None = None) -> None:
        """Open the circuit at once (bad key, exhausted quota, provider found down)."""
        now = self._clock()
        cooldown = self.cooldown_s if cooldown_s is None else cooldown_s
        state = self.state(name)
        self._put(name, replace(state, state="open", failures=state.failures + 1, open_until=now + cooldown,
                                trial_until=0.0, reason=reason, updated_at=now))
        self._background(self._write(name, self.store.trip(name, reason, now, cooldown)))

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

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every pending background write (tests, the health function, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
