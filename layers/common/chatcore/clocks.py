"""The three clocks of a streamed call: time to first token, idle gap, and the total deadline.

Keep-alive comments produce no events, so they never reset the idle clock. Leaving the wrapper
(by error, deadline or the client going away) closes the provider's iterator, which closes the
upstream connection at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chatcore import errors
from chatcore.events import ProviderEvent, ReasoningDelta, TextDelta, ToolInputDelta, ToolInputStart
from chatcore.streams import closing


class DeadlineExceededError(errors.ProviderTimeoutError):
    """The request's total time ran out; whatever was streamed is kept as truncated."""

    code = "deadline_exceeded"
    retryable = False


@dataclass(frozen=True, slots=True)
class Clocks:
    first_token_s: float
    idle_s: float
    deadline: float  # absolute, on the event loop's clock

    @classmethod
    def start(cls, *, first_token_s: float, idle_s: float, total_s: float) -> Clocks:
        return cls(first_token_s, idle_s, asyncio.get_running_loop().time() + total_s)


async def timed(events: AsyncIterator[ProviderEvent], clocks: Clocks, *, provider: str = "",
                model: str = "") -> AsyncIterator[ProviderEvent]:
    """Yield `events`, raising a timeout error when any of the three clocks runs out."""
    loop = asyncio.get_running_loop()
    first_token_seen = False
    async with closing(events) as source:
        while True:
            now = loop.time()
            budget = clocks.idle_s if first_token_seen else clocks.first_token_s
            limit = min(now + budget, clocks.deadline)
            try:
                async with asyncio.timeout_at(limit):
                    event = await anext(source)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                if loop.time() >= clocks.deadline - 1e-3:
                    raise DeadlineExceededError("The response took too long and was cut off.",
                                                provider=provider, model=model) from exc
                what = "between tokens" if first_token_seen else "before the first token"
                raise errors.ProviderTimeoutError(f"The provider stalled {what}.", provider=provider,
                                                  model=model) from exc
            # A tool call's input is output as much as text is: it starts the idle clock too.
            if not first_token_seen and isinstance(event, TextDelta | ReasoningDelta | ToolInputStart | ToolInputDelta):
                first_token_seen = True
            yield event
