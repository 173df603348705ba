"""The DynamoDB-backed `Limiter`: rate limits, token budgets and stream leases for one request.

All of a user's limits live in one item (`limits/ledger.py`), so `admit` is one conditional
`UpdateItem` (the caller overlaps it with the history read) and `settle` one more: it reconciles the
tokens the item holds for the request with the usage the provider reported and frees the lease, in
every outcome. A refused request has written nothing, so it holds nothing and needs no undo.

Reserving more (the stored history is longer than the request showed, or a later tool step) writes
nothing when the request saw ample headroom: if every stream the user may have open at once could
take ten times this request's unwritten top-ups, and both budgets as the request last saw them (at
its admission, or its last written top-up) would still hold:
`(unwritten + tokens) * concurrent_streams * UNWRITTEN_SHARE <= min(minute headroom, day headroom)`
with `UNWRITTEN_SHARE = 10`. The settlement
charges the real usage anyway (`used - held`), so the common turn costs two writes and no round trip
before the first token. Otherwise the top-up is written (or refused, 429) as a conditional
`UpdateItem`. An unwritten top-up is invisible to the user's other requests until it is settled: a
request admitted (or a top-up written) after it is checked against the counters without it, so a
window can end above its limit by the unwritten top-ups of the user's streams open at the time:
each under 1/(10 x `concurrent_streams`) of the headroom it saw, so together under a tenth of the
limit. Near a limit every top-up is written, and checked, exactly as before.

DynamoDB unavailable or throttled: the one write checks all three limits (`minute`, `day`,
`streams`), so they fail together. The request goes through unchecked only if all three are listed
in `LIMITS_FAIL_OPEN`; otherwise it fails closed (503), because letting it through would skip the
limits that must stay closed too.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from chatcore import background, errors
from chatcore.dynamodb import client_for
from chatcore.events import ErrorEvent, Event, Finish, ReasoningDelta, TextDelta, Usage, UsageReport
from chatcore.limits.ledger import Admitted, LimitLedger, Refused
from chatcore.limits.policy import LimitPolicy, TierLimits
from chatcore.principal import Principal
from chatcore.settings import Settings
from chatcore.tokens import DEFAULT_CHARS_PER_TOKEN

LIMIT_NAMES = ("minute", "day", "streams")


def _log_warning(message: str, **fields: Any) -> None:
    from chatcore.observability import get_logger

    get_logger().warning(message, extra=fields)


def _error_code(exc: BaseException) -> Any:
    return getattr(exc, "response", {}).get("Error", {}).get("Code")


def known_usage(usage: Usage | None) -> int | None:
    """Tokens actually used, or None when the provider did not report both sides."""
    if usage is None or usage.input_tokens is None or usage.output_tokens is None:
        return None
    return usage.input_tokens + usage.output_tokens


def reset_header(seconds: float) -> str:
    """Whole seconds until a window resets, as sent in `X-RateLimit-Reset` and `Retry-After`."""
    return str(max(1, math.ceil(seconds)))


UNWRITTEN_SHARE = 10  # unwritten top-ups stay under 1/10 of what every open stream saw left


class LimitAdmission:
    """One admitted request: what it reserved, and how to settle and release it (idempotently).

    `admitted` is None when the limits failed open (nothing was reserved, nothing to give back).
    `_reserved` is the request's whole reservation (the per-request bound and its message use it);
    `_held` is the part written to the limits item (the admission and written top-ups), which the
    settlement corrects to the usage.
    """

    def __init__(self, limiter: DynamoDBLimiter, user_id: str, reserved: int, admitted: Admitted | None,
                 limits: TierLimits, *, output_cap: int = 0) -> None:
        self.headers = _headers(limits, admitted.requests, admitted.tokens, admitted.reset_s) if admitted else {}
        self._limiter = limiter
        self._user_id = user_id
        self._reserved = reserved
        self._held = reserved  # the admission wrote its estimate; unwritten top-ups add to _reserved only
        # The windows' tokens as this request last wrote them (the admission, then each written top-up).
        self._seen = (admitted.tokens, admitted.day_tokens) if admitted else (0, 0)
        self._limits = limits
        self._input_estimate = max(reserved - output_cap, 0)  # what the prompt is estimated to cost
        self._admitted = admitted
        self._done = False
        self._list_top: str | None = None

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

    async def reserve_more(self, tokens: int, *, prompt_tokens: int | None = None) -> None:
        """Reserve `tokens` more for this request (its stored history turned out longer than the
        request showed, or a later step of its turn is about to be sent), or raise 429 (or 400 beyond
        the plan's per-request bound) holding nothing more.

        `prompt_tokens` is how much more prompt the request now sends (all of `tokens` when not
        given): a step's reservation also holds room for its output, which must not be charged as
        prompt when the provider reports no usage (`_used`). It counts even when nothing more needs
        reserving (the turn's earlier steps left enough unused).

        Nothing is written when the request saw ample headroom (module docstring); otherwise one
        conditional `UpdateItem` on the user's limits item, charging both windows or neither.
        """
        prompt = tokens if prompt_tokens is None else prompt_tokens
        if tokens > 0:
            await self._reserve(tokens)
        self._input_estimate += max(prompt, 0)

    async def _reserve(self, tokens: int) -> None:
        limits = self._limits
        cap = min(limits.tokens_per_minute, limits.tokens_per_day)
        if self._reserved + tokens > cap:
            raise errors.RequestError(
                f"This conversation may use up to {self._reserved + tokens} tokens, more than your plan allows at "
                f"once ({cap}). Start a new conversation or lower maxOutputTokens.")
        admitted = self._admitted
        # With ample headroom (every stream the user can have open could take ten times as much and both
        # budgets, as this request last saw them, would hold) the top-up stays unwritten: the settlement
        # charges it.
        if admitted is not None and not self._ample(tokens):
            limiter = self._limiter
            try:
                outcome = await asyncio.to_thread(limiter.ledger.reserve, self._user_id, limiter.clock(),
                                                  admitted, tokens, limits)
            except Exception as exc:  # botocore: throttled, unavailable, timed out
                _log_warning("limit check unavailable", limit="reserve", error=type(exc).__name__,
                             code=_error_code(exc))
                if not limiter.fails_open:
                    raise errors.StorageUnavailableError(
                        "Usage limits cannot be checked right now; try again shortly.", retry_after=1) from None
                outcome = None
            if isinstance(outcome, Refused):
                raise errors.LimitExceededError(
                    "Token budget reached: this conversation's history is longer than what is left of your budget.",
                    retry_after=outcome.retry_after_s, headers={"retry-after": reset_header(outcome.retry_after_s)},
                    limit=outcome.limit)
            if isinstance(outcome, tuple):
                self._held += tokens
                self._seen = outcome
        self._reserved += tokens
        self._remaining_tokens()

    def _ample(self, tokens: int) -> bool:
        """Whether `tokens` more can stay unwritten: the headroom this request last saw (at its admission
        or its last written top-up) fits its unwritten top-ups, these included, `UNWRITTEN_SHARE` times
        for every stream the user may have open at once (so all of them together stay under a tenth
        of the limit)."""
        limits = self._limits
        minute, day = self._seen
        headroom = min(limits.tokens_per_minute - minute, limits.tokens_per_day - day)
        unwritten = self._reserved - self._held + tokens
        return unwritten * limits.concurrent_streams * UNWRITTEN_SHARE <= headroom

    def _remaining_tokens(self) -> None:
        """`x-ratelimit-remaining-tokens`: the minute's budget less its tokens as last written and this
        request's unwritten top-ups."""
        if "x-ratelimit-remaining-tokens" in self.headers:
            taken = self._seen[0] + self._reserved - self._held
            self.headers["x-ratelimit-remaining-tokens"] = str(max(self._limits.tokens_per_minute - taken, 0))

    async def release(self) -> None:
        """The request failed before streaming: give back all reserved tokens and the lease."""
        await background.finish(self._settle(0))

    @property
    def list_top(self) -> str | None:
        """The list order key the user's latest turn moved a conversation to (None: unknown)."""
        return self._admitted.top if self._admitted is not None else None

    def record_list_top(self, order_key: str) -> None:
        """This turn moved its conversation to `order_key`: the settlement records it (no extra write)."""
        self._list_top = max(order_key, self._list_top or "")

    async def _settle(self, used: int | None) -> None:
        """Charge `used - held` tokens (the whole reservation if `used` is unknown) and free the lease:
        one write. `held` is what the item holds for this request: unwritten top-ups are charged here."""
        if self._done:
            return
        self._done = True
        if self._admitted is None:
            return
        delta = (self._reserved if used is None else used) - self._held  # unknown usage: keep the reservation
        try:
            await asyncio.to_thread(self._limiter.ledger.settle, self._user_id, self._admitted, delta,
                                    self._list_top)
        except Exception as exc:
            # A lost give-back only over-counts (the window ends it; the lease expires after LEASE_TTL_S).
            _log_warning("limit settlement failed", error=type(exc).__name__, code=_error_code(exc))


class DynamoDBLimiter:
    """Per-user limits from a `LimitPolicy`, stored in one item per user (`USER#<user>#LIMITS`)."""

    def __init__(self, table_name: str, policy: LimitPolicy, client: Callable[[], Any], *,
                 lease_ttl_s: float = 900.0, fail_open: frozenset[str] = frozenset(),
                 clock: Callable[[], float] = time.time) -> None:
        unknown = set(fail_open) - set(LIMIT_NAMES)
        if unknown:
            raise ValueError(f"LIMITS_FAIL_OPEN has unknown limits {sorted(unknown)}; allowed: {LIMIT_NAMES}")
        self.policy = policy
        self.ledger = LimitLedger(table_name, client, lease_ttl_s)
        self.fail_open = fail_open
        # One write checks every limit, so an outage lets a request through only if none must fail closed.
        self.fails_open = set(LIMIT_NAMES) <= fail_open
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> DynamoDBLimiter:
        """The limiter the settings describe; raises `ValueError` on a bad `LIMITS_JSON`."""
        return cls(settings.table_name, LimitPolicy.from_json(settings.limits_json),
                   lambda: client_for(settings, critical=True), lease_ttl_s=settings.lease_ttl_s,
                   fail_open=frozenset(settings.limits_fail_open))

    async def admit(self, principal: Principal, estimated_tokens: int, *, output_cap: int = 0) -> LimitAdmission:
        """Reserve a request, `estimated_tokens` and a stream lease, or raise 429 / 503 / 400.

        If the caller is cancelled (client gone) while the check runs, whatever it reserved is
        given back once it finishes.
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
        try:
            outcome = await asyncio.to_thread(self.ledger.admit, principal.user_id, self.clock(), tokens, limits)
        except Exception as exc:  # botocore: throttled, unavailable, timed out, misconfigured
            _log_warning("limit check unavailable", limit=",".join(LIMIT_NAMES), error=type(exc).__name__,
                         code=_error_code(exc))
            if not self.fails_open:
                _emit("LimitUnavailable", principal)
                raise errors.StorageUnavailableError("Usage limits cannot be checked right now; try again shortly.",
                                                     retry_after=1) from None
            return LimitAdmission(self, principal.user_id, tokens, None, limits, output_cap=output_cap)
        if isinstance(outcome, Refused):
            raise _refusal(principal, limits, outcome)
        return LimitAdmission(self, principal.user_id, tokens, outcome, limits, output_cap=output_cap)


def _refusal(principal: Principal, limits: TierLimits, refused: Refused) -> errors.LimitExceededError:
    headers = {**_headers(limits, refused.requests, refused.tokens, refused.reset_s),
               "retry-after": reset_header(refused.retry_after_s)}
    _emit("LimitExceeded", principal, refused.limit)
    if refused.limit == "tokens_per_day":
        message = f"Daily token budget of {limits.tokens_per_day} reached."
    elif refused.limit == "concurrent_streams":
        message = f"Too many simultaneous streams (at most {limits.concurrent_streams})."
    else:
        message = f"Rate limit reached ({refused.limit.replace('_', ' ')})."
    return errors.LimitExceededError(message, retry_after=refused.retry_after_s, headers=headers,
                                     limit=refused.limit)


def _headers(limits: TierLimits, requests: int, tokens: int, reset_s: float) -> dict[str, str]:
    """`X-RateLimit-*` for the request-per-minute window, plus the minute's token budget."""
    return {
        "x-ratelimit-limit": str(limits.requests_per_minute),
        "x-ratelimit-remaining": str(max(limits.requests_per_minute - requests, 0)),
        "x-ratelimit-reset": reset_header(reset_s),
        "x-ratelimit-limit-tokens": str(limits.tokens_per_minute),
        "x-ratelimit-remaining-tokens": str(max(limits.tokens_per_minute - tokens, 0)),
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
