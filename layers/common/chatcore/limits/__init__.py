"""Per-user limits: requests and tokens per window, and concurrent-stream leases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from chatcore.events import Event
from chatcore.principal import Principal
from chatcore.settings import Settings


class Admission(Protocol):
    """A granted request: headers to send, and a wrapper that settles usage and frees the lease."""

    headers: dict[str, str]

    @property
    def list_top(self) -> str | None:
        """The conversation list order key the user's latest turn moved a conversation to, as the
        limits item records it (None: unknown), so a turn whose conversation is first in the list
        already can leave its key alone."""
        ...

    def record_list_top(self, order_key: str) -> None:
        """This turn moved its conversation to `order_key`; recorded by the settlement."""
        ...

    def settle(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]: ...

    async def release(self) -> None:
        """Give back what was reserved when the request fails before streaming starts."""
        ...

    async def reserve_more(self, tokens: int, *, prompt_tokens: int | None = None) -> None:
        """Reserve `tokens` more (the prompt turned out longer than estimated, or a later step of the
        turn), or raise 429. `prompt_tokens`: how much of that is prompt rather than room for output
        (all of `tokens` when not given), charged if the provider reports no usage."""
        ...


class Limiter(Protocol):
    async def admit(self, principal: Principal, estimated_tokens: int, *, output_cap: int = 0) -> Admission:
        """Reserve a request, the estimated tokens and a stream lease, or raise `LimitExceededError`."""
        ...


@dataclass
class UnlimitedAdmission:
    headers: dict[str, str] = field(default_factory=dict)
    list_top: str | None = None  # nothing records it without limits: every turn moves its conversation

    def record_list_top(self, order_key: str) -> None:
        return None

    def settle(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        return events

    async def release(self) -> None:
        return None

    async def reserve_more(self, tokens: int, *, prompt_tokens: int | None = None) -> None:
        return None


class NoLimits:
    async def admit(self, principal: Principal, estimated_tokens: int, *, output_cap: int = 0) -> Admission:
        return UnlimitedAdmission()


def build_limiter(settings: Settings) -> Limiter:
    """`LIMITS_ENABLED=false` → no limits; otherwise the DynamoDB limiter (bad `LIMITS_JSON` raises here)."""
    if not settings.limits_enabled:
        return NoLimits()
    from chatcore.limits.limiter import DynamoDBLimiter

    return DynamoDBLimiter.from_settings(settings)
