"""Conversation memory as the chat endpoint sees it: load the turn's history, record its answer.

`StatelessMemory` trusts the client's messages (no storage); the DynamoDB-backed memory in
`chatcore.store` keeps the server's history as the source of truth.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from chatcore import errors
from chatcore.api.schemas import ChatRequestBody
from chatcore.auth import Principal
from chatcore.events import Event
from chatcore.messages import Message


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class MemoryTurn(Protocol):
    conversation_id: str | None
    messages: tuple[Message, ...]
    summary: str | None
    message_id: str
    chars_per_token: float  # the conversation's calibrated ratio, for `store.context_window.fit_prompt`

    def record(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """Pass events through, storing the assistant message in every outcome."""
        ...


class Memory(Protocol):
    async def begin(self, principal: Principal, body: ChatRequestBody, system_allowed: bool) -> MemoryTurn: ...


def client_messages(body: ChatRequestBody) -> tuple[Message, ...]:
    """The body's user and assistant messages as provider messages (system ones are handled apart)."""
    return tuple(Message(role=m.role, content=m.text()) for m in body.messages if m.role != "system")


@dataclass
class StatelessTurn:
    conversation_id: str | None
    messages: tuple[Message, ...]
    summary: str | None = None
    message_id: str = field(default_factory=new_message_id)
    chars_per_token: float = 4.0

    def record(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        return events


class StatelessMemory:
    """No storage: the conversation is whatever the client sent."""

    async def begin(self, principal: Principal, body: ChatRequestBody, system_allowed: bool) -> MemoryTurn:
        messages = client_messages(body)
        if not messages:
            raise errors.RequestError("The request has no user message.")
        return StatelessTurn(conversation_id=body.id, messages=messages)
