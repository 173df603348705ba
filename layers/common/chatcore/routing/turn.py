"""One turn as the router sees it: the prompt's parts and the model choice, not yet resolved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatcore.messages import Message, ToolChoice, ToolSpec, new_message_id
from chatcore.tokens import DEFAULT_CHARS_PER_TOKEN


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """A validated request to answer a conversation.

    `model` may be empty: the router resolves it (once) from `complexity` or the default model.
    """

    model: str | None
    messages: tuple[Message, ...]
    system: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    message_id: str = field(default_factory=new_message_id)
    summary: str | None = None  # rolling summary of the messages no longer sent verbatim
    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN  # the conversation's calibrated ratio
    conversation_id: str | None = None
    user_id: str | None = None
    request_id: str | None = None  # the Lambda request id (or a fresh one locally), for logs
    deadline_s: float | None = None  # seconds left for the whole request, when known
    complexity: str | None = None  # simple | medium | complex: picks a tier when `model` is empty
    provider: str | None = None  # preferred provider: its deployments go first in the chain
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_format: dict[str, Any] | None = None
    memories: str | None = None  # the long-term memory block (chatcore.memories.recall), dropped when short of room
    tools: tuple[ToolSpec, ...] = ()  # offered to the model (client and server tools)
    tool_choice: ToolChoice | None = None
