"""`DynamoMemory`: the chat endpoint's memory backed by `ConversationStore`.

The server's stored history is the source of truth: of the request only the last user message is
used (appended, idempotently by its id). The history read and the user message write are
independent, so they run concurrently: one round trip of latency before the model is called.
The assistant message is stored in every outcome, before the terminal event reaches the client
when the stream ends normally or with an error, and from the generator's cleanup (shielded from
cancellation) when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from chatcore import errors
from chatcore.api.schemas import ChatRequestBody, UIMessage
from chatcore.auth import Principal
from chatcore.events import ErrorEvent, Event, Finish, ReasoningDelta, Start, TextDelta, Usage, UsageReport
from chatcore.memory import MemoryTurn, StatelessMemory, new_message_id
from chatcore.messages import Message
from chatcore.observability import emit_metrics, get_logger
from chatcore.settings import Settings
from chatcore.store.conversations import (
    MESSAGE_ID,
    AppendResult,
    ConversationStore,
    MessageStatus,
    RecentHistory,
    StoredMessage,
    calibration_sample,
    message_bytes,
    validate_conversation_id,
)
from chatcore.store.summarizer import SummaryTrigger

TITLE_CHARS = 80
_pending_writes: set[asyncio.Task[Any]] = set()  # writes that outlive a cancelled stream


def title_from(text: str) -> str:
    """A conversation title from its first message: the first words, at most 80 characters."""
    words = " ".join(text.split())
    if len(words) <= TITLE_CHARS:
        return words
    cut = words[:TITLE_CHARS].rsplit(" ", 1)[0] or words[:TITLE_CHARS]
    return cut + "…"


def _ui_parts(message: UIMessage) -> list[dict[str, Any]] | None:
    """The message's parts worth storing apart from its text (None when they are only text)."""
    if message.parts is None:
        return None
    parts = [part.model_dump(exclude_none=True) for part in message.parts]
    if all(part.get("type") == "text" and set(part) <= {"type", "text", "state"} for part in parts):
        return None
    return parts


@dataclass
class StoredTurn:
    """One chat turn against a stored conversation (implements `chatcore.memory.MemoryTurn`)."""

    memory: DynamoMemory
    user_id: str
    conversation_id: str | None  # always set here; typed as the `MemoryTurn` protocol has it
    messages: tuple[Message, ...]
    summary: str | None
    chars_per_token: float
    replaces: tuple[StoredMessage, ...] = ()
    prompt_chars: int = 0
    unsummarized_chars: int = 0
    message_id: str = field(default_factory=new_message_id)

    async def record(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """Pass the events through and store the assistant message, whatever happens."""
        answer = _AnswerRecorder()
        stored = False
        try:
            async for event in events:
                answer.add(event)
                if isinstance(event, Finish | ErrorEvent):
                    # Stored before the client sees the end: after it, Lambda may freeze the process.
                    await self._store(answer, answer.status())
                    stored = True
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            if not stored:
                stored = True
                await _shielded(self._store(answer, "aborted"))
            raise
        except BaseException as exc:
            if not stored:
                stored = True
                answer.error_code = getattr(exc, "code", "internal_error")
                await _shielded(self._store(answer, "error"))
            raise
        if not stored:  # the source ended without Finish or ErrorEvent: say it was cut short
            await self._store(answer, "truncated")

    async def _store(self, answer: _AnswerRecorder, status: MessageStatus) -> None:
        try:
            await self.memory.store_answer(self, answer.message(self.message_id, status,
                                                                self.memory.settings.max_stored_message_bytes),
                                           answer.usage)
        except Exception as exc:  # storage trouble must not break the answer being streamed
            get_logger().error("assistant message not stored",
                               extra={"conversation_id": self.conversation_id, "error": type(exc).__name__})
            emit_metrics("chat", {}, {"MessageStoreFailures": (1, "Count")})


async def _shielded(write: Any) -> None:
    """Run a write to its end even if the awaiting task is cancelled (again) meanwhile."""
    task = asyncio.ensure_future(write)
    _pending_writes.add(task)
    task.add_done_callback(_pending_writes.discard)
    with contextlib.suppress(asyncio.CancelledError):  # the task carries on; the caller re-raises its own
        await asyncio.shield(task)


class _AnswerRecorder:
    """Accumulates what the client saw of the assistant message."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.start: Start | None = None
        self.usage: Usage | None = None
        self.finish: Finish | None = None
        self.error: ErrorEvent | None = None
        self.error_code: str | None = None

    def add(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, Start):
            self.start = event
        elif isinstance(event, UsageReport):
            self.usage = event.usage
        elif isinstance(event, Finish):
            self.finish = event
            self.usage = event.usage or self.usage
        elif isinstance(event, ErrorEvent):
            self.error = event
            self.error_code = event.code
            self.usage = event.usage or self.usage

    def status(self) -> MessageStatus:
        if self.finish is not None:
            return "complete"
        if self.error is not None and self.error.code == "deadline_exceeded":
            return "truncated"
        return "error"

    def message(self, message_id: str, status: MessageStatus, max_bytes: int) -> StoredMessage:
        text, reasoning = "".join(self.text), "".join(self.reasoning)
        truncated = message_bytes(text, None, reasoning) > max_bytes
        if truncated:  # never silently: the stored message says so, and the log too
            reasoning = reasoning.encode()[:max_bytes // 4].decode(errors="ignore")
            text = text.encode()[:max_bytes - len(reasoning.encode())].decode(errors="ignore")
            get_logger().warning("assistant message clipped to the item size limit", extra={"id": message_id})
        model = f"{self.start.provider}/{self.start.model}" if self.start else None
        return StoredMessage(
            id=message_id, role="assistant", text=text, reasoning=reasoning, status=status, model=model,
            usage=self.usage.as_dict() if self.usage else None,
            finish_reason=self.finish.reason if self.finish else ("error" if status == "error" else None),
            error_code=self.error_code if status in ("error", "truncated") else None,
            storage_truncated=truncated,
        )


class DynamoMemory:
    """Conversation memory in DynamoDB (implements `chatcore.memory.Memory`)."""

    def __init__(self, settings: Settings, store: ConversationStore, trigger: SummaryTrigger | None = None) -> None:
        self.settings = settings
        self.store = store
        self.trigger = trigger
        self._stateless = StatelessMemory()

    async def begin(self, principal: Principal, body: ChatRequestBody, system_allowed: bool) -> MemoryTurn:
        """Load the stored history and append the request's last user message, concurrently.

        Without a conversation `id` nothing is stored and the client's messages are used as sent.
        """
        if body.id is None:
            return await self._stateless.begin(principal, body, system_allowed)
        conversation_id = validate_conversation_id(body.id)
        user_id = principal.user_id
        last = body.messages[-1]
        new_user: StoredMessage | None = None
        write: Any = None
        if last.role == "user":
            new_user = self._user_message(last)
            write = asyncio.to_thread(self.store.append_message, user_id, conversation_id, new_user,
                                      title=title_from(new_user.text))
        read = asyncio.to_thread(self.store.load_recent, user_id, conversation_id)
        if write is not None:
            history, appended = await asyncio.gather(read, write)
        else:
            history, appended = await read, None
        return self._turn(user_id, conversation_id, history, new_user, appended, system_allowed, body)

    def _user_message(self, message: UIMessage) -> StoredMessage:
        text = message.text()
        parts = _ui_parts(message)
        size = message_bytes(text, parts)
        if size > self.settings.max_stored_message_bytes:
            raise errors.PayloadTooLargeError(
                f"The message is {size} bytes; at most {self.settings.max_stored_message_bytes} can be stored.")
        message_id = message.id if message.id and MESSAGE_ID.match(message.id) else None
        if message.id and message_id is None:
            raise errors.RequestError("A message id is 1-200 characters of letters, digits, '.', '_', ':' or '-'.")
        return StoredMessage(id=message_id or f"msg_{uuid.uuid4().hex}", role="user", text=text, parts=parts)

    def _turn(self, user_id: str, conversation_id: str, history: RecentHistory, new_user: StoredMessage | None,
              appended: AppendResult | None, system_allowed: bool, body: ChatRequestBody) -> StoredTurn:
        stored = history.messages
        replaces: list[StoredMessage] = []
        if new_user is not None:
            index = next((i for i, m in enumerate(stored) if m.id == new_user.id), None)
            if index is None:
                stored = [*stored, appended.message if appended else new_user]
            else:
                # Already stored (a retry or a regenerate): answer it again, replacing the answer after it.
                after = stored[index + 1:]
                replaces = [m for m in after[:next((i for i, m in enumerate(after) if m.role == "user"), len(after))]]
                stored = stored[:index + 1]
        elif body.trigger == "regenerate-message":
            while stored and stored[-1].role == "assistant":
                replaces.append(stored.pop())
        if not any(m.role == "user" for m in stored):
            raise errors.RequestError("The request has no user message.")
        messages = tuple(Message(role=m.role, content=m.text) for m in stored if m.text)
        meta = history.meta
        system_chars = len(self.settings.system_prompt or "")
        if system_allowed:
            system_chars += sum(len(m.text()) for m in body.messages if m.role == "system") + len(body.system or "")
        summary = meta.summary if meta else None
        text_chars = sum(len(m.content) for m in messages)
        return StoredTurn(
            memory=self, user_id=user_id, conversation_id=conversation_id, messages=messages, summary=summary,
            chars_per_token=meta.chars_per_token if meta else 4.0, replaces=tuple(replaces),
            prompt_chars=text_chars + system_chars + len(summary or ""), unsummarized_chars=text_chars,
        )

    async def store_answer(self, turn: StoredTurn, message: StoredMessage, usage: Usage | None) -> None:
        """Store the assistant message of `turn`, then start a summarization if one is due."""
        sample = calibration_sample(turn.prompt_chars, len(turn.messages) + (1 if turn.summary else 0),
                                    usage.input_tokens if usage else None)
        conversation_id = turn.conversation_id
        assert conversation_id is not None  # a StoredTurn always names its conversation
        await asyncio.to_thread(self.store.append_message, turn.user_id, conversation_id, message,
                                replaces=turn.replaces, calibration=sample)
        threshold = self.settings.summary_trigger_tokens
        unsummarized = int((turn.unsummarized_chars + len(message.text)) / turn.chars_per_token)
        if self.trigger is not None and threshold > 0 and unsummarized >= threshold:
            await self.trigger.fire(turn.user_id, conversation_id)
