"""One chat turn: pick the model, call it under the three clocks, and stream typed events.

Errors before the first token are raised (the endpoint answers them as HTTP errors); errors after
it become an `ErrorEvent`, so a stream never ends silently.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from chatcore import errors
from chatcore.clocks import Clocks, timed
from chatcore.events import (
    ErrorEvent,
    Event,
    Finish,
    ProviderEvent,
    ReasoningDelta,
    Start,
    TextDelta,
    Usage,
    UsageReport,
)
from chatcore.messages import Message, ModelRequest
from chatcore.providers import ProviderRegistry, split_model
from chatcore.settings import Settings


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """A validated request to answer a conversation."""

    model: str
    messages: tuple[Message, ...]
    system: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    message_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    summary: str | None = None  # rolling summary of the messages no longer sent verbatim
    conversation_id: str | None = None
    user_id: str | None = None
    deadline_s: float | None = None  # seconds left for the whole request, when known


class ChatService:
    def __init__(self, settings: Settings, providers: ProviderRegistry) -> None:
        self.settings = settings
        self.providers = providers

    def _clocks(self, turn: ChatTurn) -> Clocks:
        total = self.settings.max_stream_s
        if turn.deadline_s is not None:
            total = min(total, max(turn.deadline_s - self.settings.deadline_margin_s, 1.0))
        return Clocks.start(first_token_s=self.settings.first_token_timeout_s,
                            idle_s=self.settings.idle_timeout_s, total_s=total)

    async def stream(self, turn: ChatTurn) -> AsyncIterator[Event]:
        """Events for one turn. Raises `ChatError` if it fails before the first token."""
        provider_name, model = split_model(turn.model)
        provider = self.providers.get(provider_name)
        request = ModelRequest(
            model=model,
            messages=turn.messages,
            system=turn.system,
            temperature=turn.temperature,
            max_output_tokens=turn.max_output_tokens or self.settings.max_output_tokens,
        )
        events = timed(provider.stream(request), self._clocks(turn), provider=provider_name, model=model)
        async for event in _started(events, Start(turn.message_id, provider_name, model)):
            yield event


async def _started(events: AsyncIterator[ProviderEvent], start: Start) -> AsyncIterator[Event]:
    """Hold events back until the first token (or the end), then emit `start` and release them.

    Failures before that point propagate as exceptions (for HTTP errors and fallback); failures
    after it become an `ErrorEvent` carrying the usage seen so far.
    """
    pending: list[ProviderEvent] = []
    usage: Usage | None = None
    started = False
    try:
        async for event in events:
            if isinstance(event, UsageReport):
                usage = event.usage
            if not started:
                pending.append(event)
                if isinstance(event, TextDelta | ReasoningDelta | Finish):
                    started = True
                    yield start
                    for held in pending:
                        yield held
                    pending.clear()
                continue
            yield event
    except errors.ProviderError as exc:
        if not started:
            raise
        yield ErrorEvent(message=exc.message, code=exc.code, retryable=exc.retryable, usage=usage)
    except asyncio.CancelledError:
        raise
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    if not started:
        raise errors.TruncatedStreamError("The provider returned no answer.")
