"""One chat turn: the request as the chat service sees it, answered by the router.

Model choice, fallback, the three clocks and cost live in `chatcore.routing`. Errors before the
first token are raised (the endpoint answers them as HTTP errors); errors after it become an
`ErrorEvent`, so a stream never ends silently.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from chatcore.events import Event
from chatcore.messages import Message
from chatcore.providers import ProviderRegistry
from chatcore.routing.router import Router
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
    chars_per_token: float = 4.0  # the conversation's calibrated ratio: `fit_prompt(..., calibration=)`
    conversation_id: str | None = None
    user_id: str | None = None
    request_id: str | None = None  # the Lambda request id (or a fresh one locally), for logs
    deadline_s: float | None = None  # seconds left for the whole request, when known
    complexity: str | None = None  # simple | medium | complex: picks a tier when `model` is empty
    provider: str | None = None  # preferred provider: its deployments go first in the chain


class ChatService:
    def __init__(self, settings: Settings, providers: ProviderRegistry) -> None:
        self.settings = settings
        self.providers = providers
        self.router = Router(settings, providers)

    def stream(self, turn: ChatTurn) -> AsyncIterator[Event]:
        """Events for one turn, routed over the model registry (`chatcore.routing`).

        Nothing is emitted before the first token; if every deployment fails before it, the
        error is raised (the endpoint answers it as an HTTP error).
        """
        return self.router.stream(turn)

