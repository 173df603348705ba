"""The DynamoDB-backed `Limiter`: rate limits, token budgets and stream leases for one request.

`admit` runs the three checks (minute item, day item, lease item) concurrently, each one
conditional atomic `UpdateItem`, so the critical path costs one DynamoDB round trip, overlapped by
the caller with the history read. If any check refuses, the others are undone before answering 429
(a refused request holds nothing). `settle` reconciles the reserved tokens with the usage the
provider reported and releases the lease in every outcome.

DynamoDB unavailable or throttled: each limit (`minute`, `day`, `streams`) fails closed (503) by
default, or open (the request goes through unchecked for that limit) if listed in
`LIMITS_FAIL_OPEN`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from chatcore import background, errors
from chatcore.dynamodb import client_for
from chatcore.events import ErrorEvent, Event, Finish, ReasoningDelta, TextDelta, Usage, UsageReport
from chatcore.limits.leases import LeaseCheck, StreamLeases
from chatcore.limits.policy import LimitPolicy, TierLimits
from chatcore.limits.rate_limiter import RateLimiter, WindowCheck, reset_header
from chatcore.principal import Principal
from chatcore.settings import Settings
from chatcore.tokens import DEFAULT_CHARS_PER_TOKEN

LIMIT_NAMES = ("minute", "day", "streams")

@dataclass(frozen=True, slots=True)
class _Unavailable:
    """A check that could not run because DynamoDB failed; `open` means let the request through."""

    limit: str
    open: bool


def _log_warning(message: str, **fields: Any) -> None:
    from chatcore.observability import get_logger

    get_logger().warning(message, extra=fields)


def known_usage(usage: Usage | None) -> int | None:
    """Tokens actually used, or None when the provider did not report both sides."""
    if usage is None or usage.input_tokens is None or usage.output_tokens is None:
        return None
    return usage.input_tokens + usage.output_tokens


class LimitAdmission:
    """One admitted request: what it reserved, and how to settle and release it (idempotently)."""

    def __init__(self, limiter: DynamoDBLimiter, user_id: str, reserved: int, minute: WindowCheck | None,
                 day: WindowCheck | None, lease_id: str | None, headers: dict[str, str], *,
                 limits: TierLimits | None = None, output_cap: int = 0) -> None:
        self.headers = headers
        self._limiter = limiter
        self._user_id = user_id
        self._reserved = reserved
        self._limits = limits
        self._input_estimate = max(reserved - output_cap, 0)  # what the prompt is estimated to cost
        self._minute = minute
        self._day = day
        self._lease_id = lease_id
        self._done = False

    async def settle(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """Pass events through; afterwards reconcile tokens and free the lease, whatever happened.

        The settlement runs in a shielded task, so a client disconnect (the generator closed or
        cancelled) or a deadline cannot interrupt it half way.
        """
        usage: Usage | None = None
        output_chars = 0  # what the answer streamed, for a turn that ends without reported usage
        started = False  # nothing reached the client: a failure before the first event gives all back
        try:
            async for event in events:
                started = True
                if isinstance(event, TextDelta | ReasoningDelta):
                    output_chars += len(event.text)
                # A later report replaces an earlier one; a final event without usage keeps the last.
                elif isinstance(event, UsageReport) or (isinstance(event, Finish | ErrorEvent) and event.usage):
                    usage = event.usage
                if isinstance(event, Finish | ErrorEvent):
                    # Settle before the client sees the end: encoders stop pulling after it, so
                    # waiting for this generator to be closed could free the lease only at
                    # garbage collection, after the client may already have sent its next request.
                    await background.finish(self._settle(self._used(usage, output_chars)))
                yield event
        finally:
            await background.finish(self._settle(self._used(usage, output_chars) if started else 0))

    def _used(self, usage: Usage | None, output_chars: int) -> int:
        """The tokens to charge: the reported usage, else (deadline, truncation, abort) the estimated
        prompt plus the output streamed so far, never just the reservation."""
        reported = known_usage(usage)
        if reported is not None:
            return reported
        return self._input_estimate + math.ceil(output_chars / DEFAULT_CHARS_PER_TOKEN)

    async def reserve_more(self, tokens: int) -> None:
        """Reserve `tokens` more for this request (its stored history turned out longer than the
        request showed), or raise 429 (or 400 beyond the plan's per-request bound) holding nothing more."""
        if tokens <= 0 or self._limits is None:
            return
        limits = self._limits
        cap = min(limits.tokens_per_minute, limits.tokens_per_day)
        if self._reserved + tokens > cap:
            raise errors.RequestError(
                f"This conversation may use up to {self._reserved + tokens} tokens, more than your plan allows at "
                f"once ({cap}). Start a new conversation or lower maxOutputTokens.")
        rate, now = self._limiter.rate, self._limiter.clock()
        checks = []
        for window, limit, key_of in ((self._minute, limits.tokens_per_minute, rate.minute_key),
                                      (self._day, limits.tokens_per_day, rate.day_key)):
            if window is not None:
                _, reset_s, ttl = key_of(self._user_id, now)
                checks.append(asyncio.to_thread(rate.charge_tokens, window.key, reset_s, ttl, tokens, limit))
        results = await asyncio.gather(*checks, return_exceptions=True)
        refused = [r for r in results if not isinstance(r, WindowCheck) or not r.allowed]
        if refused:
            granted = [r for r in results if isinstance(r, WindowCheck) and r.allowed]
            for check in granted:  # undo the windows that did take the tokens
                background.spawn(asyncio.to_thread(rate.adjust, check.key, tokens=-tokens))
            retry = max((r.reset_s for r in refused if isinstance(r, WindowCheck)), default=1.0)
            raise errors.LimitExceededError(
                "Token budget reached: this conversation's history is longer than what is left of your budget.",
                retry_after=retry, headers={"retry-after": reset_header(retry)}, limit="tokens_per_minute")
        self._reserved += tokens
        self._input_estimate += tokens
        minute = next((r for r in results if isinstance(r, WindowCheck) and self._minute is not None
                       and r.key == self._minute.key), None)
        if minute is not None and "x-ratelimit-remaining-tokens" in self.headers:
            self.headers["x-ratelimit-remaining-tokens"] = str(max(limits.tokens_per_minute - minute.tokens, 0))

    async def release(self) -> None:
        """The request failed before streaming: give back all reserved tokens and the lease."""
        await background.finish(self._settle(0))

    async def _settle(self, used: int | None, *, requests: int = 0) -> None:
        """Charge `used - reserved` tokens (none if `used` is unknown), adjust the request count, free the lease."""
        if self._done:
            return
        self._done = True
        delta = 0 if used is None else used - self._reserved  # unknown usage: keep the reservation
        work = []
        if self._minute is not None and (delta or requests):
            work.append(asyncio.to_thread(self._limiter.rate.adjust, self._minute.key, requests=requests,
                                          tokens=delta))
        if self._day is not None and delta:
            work.append(asyncio.to_thread(self._limiter.rate.adjust, self._day.key, tokens=delta))
        if self._lease_id is not None:
            work.append(asyncio.to_thread(self._limiter.leases.release, self._user_id, self._lease_id))
        for outcome in await asyncio.gather(*work, return_exceptions=True):
            if isinstance(outcome, Exception):
                # A lost give-back only over-counts (the window or lease TTL still ends it).
                _log_warning("limit settlement failed", error=type(outcome).__name__)


class DynamoDBLimiter:
    """Per-user limits from a `LimitPolicy`, stored in the one table (`RL#…`, `LEASE#…` items)."""

    def __init__(self, table_name: str, policy: LimitPolicy, client: Callable[[], Any], *,
                 lease_ttl_s: float = 900.0, fail_open: frozenset[str] = frozenset(),
                 clock: Callable[[], float] = time.time) -> None:
        unknown = set(fail_open) - set(LIMIT_NAMES)
        if unknown:
            raise ValueError(f"LIMITS_FAIL_OPEN has unknown limits {sorted(unknown)}; allowed: {LIMIT_NAMES}")
        self.policy = policy
        self.rate = RateLimiter(table_name, client)
        self.leases = StreamLeases(table_name, client, lease_ttl_s)
        self.fail_open = fail_open
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> DynamoDBLimiter:
        """The limiter the settings describe; raises `ValueError` on a bad `LIMITS_JSON`."""
        return cls(settings.table_name, LimitPolicy.from_json(settings.limits_json),
                   lambda: client_for(settings, critical=True), lease_ttl_s=settings.lease_ttl_s,
                   fail_open=frozenset(settings.limits_fail_open))

    async def admit(self, principal: Principal, estimated_tokens: int, *, output_cap: int = 0) -> LimitAdmission:
        """Reserve a request, `estimated_tokens` and a stream lease, or raise 429 / 503 / 400.

        If the caller is cancelled (client gone) while the checks run, whatever they reserved is
        given back once they finish.
        """
        task = background.spawn(self._admit(principal, estimated_tokens, output_cap))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_release_if_admitted)
            raise

    async def _admit(self, principal: Principal, tokens: int, output_cap: int = 0) -> LimitAdmission:
        limits = self.policy.for_tier(principal.tier)
        if tokens > min(limits.tokens_per_minute, limits.tokens_per_day):
            raise errors.RequestError(
                f"This request may use up to {tokens} tokens, more than your plan allows at once "
                f"({min(limits.tokens_per_minute, limits.tokens_per_day)}). Lower maxOutputTokens or "
                "send a shorter conversation.")
        user, now = principal.user_id, self.clock()
        minute, day, lease = await asyncio.gather(
            self._check("minute", self.rate.charge_minute, user, now, max_requests=limits.requests_per_minute,
                        max_tokens=limits.tokens_per_minute, tokens=tokens),
            self._check("day", self.rate.charge_day, user, now, max_tokens=limits.tokens_per_day, tokens=tokens),
            self._check("streams", self.leases.acquire, user, limits.concurrent_streams, now),
        )
        granted = LimitAdmission(
            self, user, tokens,
            minute if isinstance(minute, WindowCheck) and minute.allowed else None,
            day if isinstance(day, WindowCheck) and day.allowed else None,
            lease.lease_id if isinstance(lease, LeaseCheck) else None,
            limits=limits, output_cap=output_cap,
            headers=_headers(limits, minute) if isinstance(minute, WindowCheck) else {},
        )
        refusal = self._refusal(principal, limits, minute, day, lease)
        if refusal is not None:
            # A refused request holds nothing: undo its request count, tokens and lease.
            await background.finish(granted._settle(0, requests=-1))
            raise refusal
        return granted

    async def _check(self, limit: str, function: Callable[..., Any], *args: Any,
                     **kwargs: Any) -> WindowCheck | LeaseCheck | _Unavailable:
        try:
            return await asyncio.to_thread(function, *args, **kwargs)  # type: ignore[no-any-return]
        except Exception as exc:  # botocore: throttled, unavailable, timed out, misconfigured
            _log_warning("limit check unavailable", limit=limit, error=type(exc).__name__,
                         code=getattr(exc, "response", {}).get("Error", {}).get("Code"))
            return _Unavailable(limit, open=limit in self.fail_open)

    def _refusal(self, principal: Principal, limits: TierLimits, minute: object, day: object,
                 lease: object) -> errors.ChatError | None:
        checks = (minute, day, lease)
        if any(isinstance(check, _Unavailable) and not check.open for check in checks):
            _emit("LimitUnavailable", principal)
            return errors.StorageUnavailableError("Usage limits cannot be checked right now; try again shortly.",
                                                  retry_after=1)
        headers = _headers(limits, minute) if isinstance(minute, WindowCheck) else {}
        if isinstance(day, WindowCheck) and not day.allowed:
            _emit("LimitExceeded", principal, "tokens_per_day")
            return errors.LimitExceededError(
                f"Daily token budget of {limits.tokens_per_day} reached.", retry_after=day.reset_s,
                headers={**headers, "retry-after": reset_header(day.reset_s)}, limit="tokens_per_day")
        if isinstance(minute, WindowCheck) and not minute.allowed:
            name = "requests_per_minute" if minute.exceeded == "requests" else "tokens_per_minute"
            _emit("LimitExceeded", principal, name)
            return errors.LimitExceededError(
                f"Rate limit reached ({name.replace('_', ' ')}).", retry_after=minute.reset_s,
                headers={**headers, "retry-after": reset_header(minute.reset_s)}, limit=name)
        if isinstance(lease, LeaseCheck) and not lease.allowed:
            _emit("LimitExceeded", principal, "concurrent_streams")
            return errors.LimitExceededError(
                f"Too many simultaneous streams (at most {limits.concurrent_streams}).",
                retry_after=lease.retry_after_s,
                headers={**headers, "retry-after": reset_header(lease.retry_after_s)}, limit="concurrent_streams")
        return None


def _headers(limits: TierLimits, minute: WindowCheck) -> dict[str, str]:
    """`X-RateLimit-*` for the request-per-minute window, plus the minute's token budget."""
    return {
        "x-ratelimit-limit": str(limits.requests_per_minute),
        "x-ratelimit-remaining": str(max(limits.requests_per_minute - minute.requests, 0)),
        "x-ratelimit-reset": reset_header(minute.reset_s),
        "x-ratelimit-limit-tokens": str(limits.tokens_per_minute),
        "x-ratelimit-remaining-tokens": str(max(limits.tokens_per_minute - minute.tokens, 0)),
    }


def _emit(metric: str, principal: Principal, limit: str = "") -> None:
    from chatcore.observability import emit_metrics

    dimensions = {"tier": principal.tier}
    if limit:
        dimensions["limit"] = limit
    try:
        emit_metrics("chat", dimensions, {metric: (1, "Count")})
    except Exception:  # metrics must never turn a 429 into a 500
        _log_warning("metric emission failed", metric=metric)


def _release_if_admitted(task: asyncio.Task[LimitAdmission]) -> None:
    if not task.cancelled() and task.exception() is None:
        background.spawn(task.result().release())
