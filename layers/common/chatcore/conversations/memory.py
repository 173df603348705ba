"""Conversation memory as the chat service sees it: load a turn's history, record its answer.

`StatelessMemory` trusts the client's messages (no storage). `DynamoMemory` keeps the server's
history as the source of truth: of the request only the last user message is used (appended,
idempotently by its id). The history read runs while the limits are checked; the user message is
written while the model is called, and must be stored before the first event reaches the client.
The assistant message is stored in every outcome, before the terminal event reaches the client
when the stream ends normally or with an error, and from the generator's cleanup (run to its end
as background work) when the client goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from chatcore import background, errors
from chatcore.conversations.store import (
    MESSAGE_ID,
    ConversationStore,
    MessageStatus,
    RecentHistory,
    StoredMessage,
    answer_position,
    calibration_sample,
    message_bytes,
    next_question_position,
    validate_conversation_id,
)
from chatcore.conversations.summarizer import SummaryTrigger
from chatcore.events import ErrorEvent, Event, Finish, ReasoningDelta, Start, TextDelta, Usage, UsageReport
from chatcore.generations import was_stopped
from chatcore.messages import ChatMessage, ChatRequest, Message, attachment_refs, new_message_id
from chatcore.observability import emit_metrics, get_logger
from chatcore.settings import Settings
from chatcore.tokens import DEFAULT_CHARS_PER_TOKEN
from chatcore.tool_parts import PartsBuilder, continued_message, has_tool_parts, merge_client_parts, to_messages


class MemoryTurn(Protocol):
    """One turn's view of the conversation: the prompt's messages, and how to record the answer."""

    conversation_id: str | None
    messages: tuple[Message, ...]
    summary: str | None
    message_id: str
    chars_per_token: float  # the conversation's calibrated ratio, for `chatcore.prompt.fit_prompt`

    def record(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """Pass events through, storing what the request adds and the assistant message in every outcome."""
        ...

    def use_list_order(self, top: str | None, moved: Callable[[str], None]) -> None:
        """`top`: the list order key the user's latest turn moved a conversation to (the limits item
        keeps it), None if unknown. A conversation whose key it is is first in the user's list
        already, so its turn leaves the key (one index write fewer). `moved` is told every key the
        turn moves its conversation to."""
        ...


class Memory(Protocol):
    async def begin(self, user_id: str, request: ChatRequest, system: str | None) -> MemoryTurn:
        """Read what the turn needs (nothing is written yet). `system` is the turn's system prompt."""
        ...


@dataclass
class StatelessTurn:
    conversation_id: str | None
    messages: tuple[Message, ...]
    summary: str | None = None
    message_id: str = field(default_factory=new_message_id)
    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN

    def record(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        return events

    def use_list_order(self, top: str | None, moved: Callable[[str], None]) -> None:
        return None


class StatelessMemory:
    """No storage: the conversation is whatever the client sent."""

    async def begin(self, user_id: str, request: ChatRequest, system: str | None) -> MemoryTurn:
        messages = request.conversation()
        if not any(m.role == "user" for m in messages):
            raise errors.RequestError("The request has no user message.")
        continued = continued_message(request)
        if continued is not None and continued.id:  # one assistant message per turn: keep its id
            return StatelessTurn(conversation_id=request.conversation_id, messages=messages,
                                 message_id=continued.id)
        return StatelessTurn(conversation_id=request.conversation_id, messages=messages)


TITLE_CHARS = 80


def title_from(text: str) -> str:
    """A conversation title from its first message: the first words, at most 80 characters."""
    words = " ".join(text.split())
    if len(words) <= TITLE_CHARS:
        return words
    cut = words[:TITLE_CHARS].rsplit(" ", 1)[0] or words[:TITLE_CHARS]
    return cut + "…"


@dataclass
class StoredTurn:
    """One chat turn against a stored conversation (implements `MemoryTurn`)."""

    memory: DynamoMemory
    user_id: str
    conversation_id: str | None  # always set here; typed as the `MemoryTurn` protocol has it
    messages: tuple[Message, ...]
    summary: str | None
    chars_per_token: float
    new_user: StoredMessage | None = None  # the request's user message, when not stored yet
    edits: tuple[StoredMessage, ...] = ()  # an edit: the edited message and all after it, replaced by `new_user`
    question_position: str | None = None  # where the question this turn answers is (or goes); its answer follows it
    counted: int = 1  # messages the answer adds to the conversation's count (2: its question is not counted yet)
    order_key: str = ""  # the conversation's list order key when the turn read it
    keep_order: bool = False  # the list order key stays: first in the list already, or moved by the question
    order_moved: Callable[[str], None] | None = None
    question: tuple[str, ...] = ()  # the texts of the user messages this turn answers, oldest first
    new_conversation: bool = False  # no metadata when the turn read the history
    replaces: tuple[StoredMessage, ...] = ()
    prompt_chars: int = 0
    unsummarized_chars: int = 0
    message_id: str = field(default_factory=new_message_id)
    temporary: bool = False  # not passed to the turn observers (long-term memory)
    continues: StoredMessage | None = None  # the stored assistant message this turn continues (tools)

    async def record(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """Store the user message while the model is called; pass the events through and store the
        assistant message, whatever happens."""
        saving: asyncio.Task[Any] | None = background.spawn(self._save_user()) if self.new_user else None
        answer = _AnswerRecorder(self.continues)
        stored = False
        try:
            async for event in events:
                if saving is not None:  # nothing reaches the client before its message is stored
                    await saving  # its failure (a duplicate, storage trouble) is the turn's failure
                    saving = None
                answer.add(event)
                if isinstance(event, Finish | ErrorEvent):
                    # Stored before the client sees the end: after it, Lambda may freeze the process.
                    saved = await self._store(answer, answer.status())
                    stored = True
                    if not saved and isinstance(event, Finish):  # the client must not think it is kept
                        event = ErrorEvent(message="The answer could not be saved; it may be missing from the "
                                                   "conversation.", code=errors.StorageUnavailableError.code,
                                           retryable=True, usage=event.usage, metadata=event.metadata)
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            if not stored and saving is None:
                stored = True
                # A stop request (`chatcore.generations`) cancels the answer too; a client leaving is `aborted`.
                await background.finish(self._store(answer, "stopped" if was_stopped(self.message_id) else "aborted"))
            raise
        except errors.StorageUnavailableError:
            raise  # the user message could not be stored: the turn did not happen
        except BaseException as exc:
            if not stored and await _saved(saving):
                stored = True
                answer.error_code = getattr(exc, "code", "internal_error")
                await background.finish(self._store(answer, "error"))
            raise
        if not stored:  # the source ended without Finish or ErrorEvent: say it was cut short
            await self._store(answer, "truncated")

    @property
    def fast_question(self) -> bool:
        """A new user message that is not an edit: it goes to its derived position with one conditional put."""
        return self.new_user is not None and not self.edits

    def use_list_order(self, top: str | None, moved: Callable[[str], None]) -> None:
        self.keep_order = bool(top) and top == self.order_key
        self.order_moved = moved

    def _moved_to(self, order_key: str | None) -> None:
        if order_key is not None:
            self.keep_order = True  # once a turn
            if self.order_moved is not None:
                self.order_moved(order_key)

    async def _save_user(self) -> None:
        try:
            outcome = await (self._put_question() if self.fast_question else self._append_question())
        except Exception as exc:
            raise errors.StorageUnavailableError("The conversation could not be saved; try again shortly.",
                                                 retry_after=1) from exc
        if outcome != "stored":
            # Another request stored this very message first (a network retry while the first one
            # still runs, or a concurrent edit): that one answers it; one message, one answer.
            raise errors.ConflictError("This message is already being answered; reload the conversation.",
                                       retry_after=1)

    async def _put_question(self) -> str:
        """The single-item path: the question at the position the history read derived (a new
        conversation's metadata first: a delete meanwhile then leaves nothing listed)."""
        assert self.new_user is not None and self.conversation_id is not None
        store = self.memory.store
        if self.new_conversation:
            self._moved_to(await asyncio.to_thread(store.create_conversation, self.user_id, self.conversation_id,
                                                   title_from(self.new_user.text)))
        outcome: str = await asyncio.to_thread(store.put_question, self.user_id, self.conversation_id,
                                               replace(self.new_user, position=self.question_position or ""))
        if outcome == "stored":
            self.counted = 2  # counted with its answer
        elif outcome == "taken" and not await asyncio.to_thread(self._stored_meanwhile):
            outcome = await self._append_question()  # another message took it (two tabs): stored after it
        return outcome

    async def _append_question(self) -> str:
        """The transactional path (an edit, a lost position; the id marker catches a retry)."""
        assert self.new_user is not None and self.conversation_id is not None
        result = await asyncio.to_thread(self.memory.store.append_message, self.user_id, self.conversation_id,
                                         self.new_user, title=title_from(self.new_user.text), replaces=self.edits,
                                         move_order=not self.keep_order)
        self.question_position = result.message.position
        self._moved_to(result.order_key)
        return result.outcome

    def _stored_meanwhile(self) -> bool:
        """Whether the new user message is in the conversation already (stored by a retry of this request)."""
        assert self.new_user is not None and self.conversation_id is not None
        history = self.memory.store.load_recent(self.user_id, self.conversation_id)
        return any(m.id == self.new_user.id for m in history.messages)

    async def _store(self, answer: _AnswerRecorder, status: MessageStatus) -> bool:
        """Store the assistant message; False (logged and counted, never raised) when it failed."""
        try:
            await self.memory.store_answer(self, answer.message(self.message_id, status,
                                                                self.memory.settings.max_stored_message_bytes),
                                           answer.usage)
        except Exception as exc:  # storage trouble must not break the answer being streamed
            get_logger().error("assistant message not stored",
                               extra={"conversation_id": self.conversation_id, "error": type(exc).__name__})
            emit_metrics("chat", {}, {"MessageStoreFailures": (1, "Count")})
            return False
        return True


async def _saved(saving: asyncio.Task[Any] | None) -> bool:
    """Whether the user message is stored (waiting for its write if it still runs)."""
    if saving is None:
        return True
    try:
        await asyncio.shield(saving)
    except Exception:
        return False
    return True


class _AnswerRecorder:
    """Accumulates what the client saw of the assistant message."""

    def __init__(self, continues: StoredMessage | None = None) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        # The message's UI parts (tool calls need them); a continued turn starts from the stored ones.
        self.parts = PartsBuilder(continues.parts if continues is not None else None)
        self.start: Start | None = None
        self.usage: Usage | None = None
        self.finish: Finish | None = None
        self.error: ErrorEvent | None = None
        self.error_code: str | None = None

    def add(self, event: Event) -> None:
        self.parts.add(event)
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
        parts = self.parts.parts if self.parts.has_tools or self.parts.has_files else None
        if parts is not None:
            text = self.parts.text()
            if message_bytes(text, parts, reasoning) > max_bytes:  # tool outputs do not fit: drop the outputs
                parts = [{k: v for k, v in p.items() if k != "output"} for p in parts]
        truncated = message_bytes(text, parts, reasoning) > max_bytes
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
            storage_truncated=truncated, parts=parts,
        )


class DynamoMemory:
    """Conversation memory in DynamoDB (implements `Memory`)."""

    def __init__(self, settings: Settings, store: ConversationStore, trigger: SummaryTrigger | None = None) -> None:
        self.settings = settings
        self.store = store
        self.trigger = trigger
        self._stateless = StatelessMemory()

    async def begin(self, user_id: str, request: ChatRequest, system: str | None) -> MemoryTurn:
        """Load the stored history; the request's new user message is written later, by `record`.

        Without a conversation id nothing is stored and the client's messages are used as sent.
        """
        if request.conversation_id is None:
            return await self._stateless.begin(user_id, request, system)
        conversation_id = validate_conversation_id(request.conversation_id)
        last = request.messages[-1]
        incoming = self._user_message(last) if last.role == "user" else None
        history = await asyncio.to_thread(self.store.load_recent, user_id, conversation_id)
        continued = continued_message(request)
        if continued is not None:
            history = self._continued(history, continued)
        return self._turn(user_id, conversation_id, history, incoming, request, system)

    @staticmethod
    def _continued(history: RecentHistory, continued: ChatMessage) -> RecentHistory:
        """The history with its last assistant message taking the client's answers to its pending
        tool calls (outputs of client tools, approval answers); nothing else the client says counts."""
        stored = list(history.messages)
        if not stored or stored[-1].id != continued.id or stored[-1].role != "assistant" \
                or not has_tool_parts(stored[-1].parts):
            raise errors.RequestError("Only the conversation's last assistant message can be continued "
                                      "with tool results.")
        last = stored[-1]
        stored[-1] = replace(last, parts=merge_client_parts(last.parts or [], continued.parts))
        return replace(history, messages=stored)

    def _user_message(self, message: ChatMessage) -> StoredMessage:
        parts = list(message.parts) if message.parts is not None else None
        size = message_bytes(message.text, parts)
        if size > self.settings.max_stored_message_bytes:
            raise errors.PayloadTooLargeError(
                f"The message is {size} bytes; at most {self.settings.max_stored_message_bytes} can be stored.")
        message_id = message.id if message.id and MESSAGE_ID.match(message.id) else None
        if message.id and message_id is None:
            raise errors.RequestError("A message id is 1-200 characters of letters, digits, '.', '_', ':' or '-'.")
        return StoredMessage(id=message_id or new_message_id(), role="user", text=message.text, parts=parts)

    def _turn(self, user_id: str, conversation_id: str, history: RecentHistory, incoming: StoredMessage | None,
              request: ChatRequest, system: str | None) -> StoredTurn:
        stored = history.messages
        replaces: list[StoredMessage] = []
        continues: StoredMessage | None = None
        new_user: StoredMessage | None = None
        edits: list[StoredMessage] = []
        question_position: str | None = None
        if incoming is not None:
            index = next((i for i, m in enumerate(stored) if m.id == incoming.id), None)
            if index is None:
                new_user = incoming
                question_position = next_question_position(history)
                stored = [*stored, incoming]
            elif stored[index].role == "user" and stored[index].text != incoming.text:
                # An edit (useChat's `sendMessage({text, messageId})`): the same id with new text replaces
                # that message and drops everything after it, in the transaction that stores it.
                edits = stored[index:]
                new_user = incoming
                stored = [*stored[:index], incoming]
            else:
                # Already stored (a retry or a regenerate): answer it again, replacing the answer after it.
                after = stored[index + 1:]
                replaces = [m for m in after[:next((i for i, m in enumerate(after) if m.role == "user"), len(after))]]
                stored = stored[:index + 1]
        elif continued_message(request) is not None:
            continues = stored[-1]  # checked by `_continued`: the turn goes on in this message
        elif request.trigger == "regenerate-message":
            while stored and stored[-1].role == "assistant":
                replaces.append(stored.pop())
        if not any(m.role == "user" for m in stored):
            raise errors.RequestError("The request has no user message.")
        if new_user is None:
            question_position = next((m.position for m in reversed(stored) if m.role == "user"), None)
        messages = tuple(message for m in stored if m.text or has_tool_parts(m.parts) or attachment_refs(m.parts)
                         for message in (to_messages(m.role, m.text, m.parts) if m.role == "assistant"
                                         else [Message(role=m.role, content=m.text,
                                                       attachments=attachment_refs(m.parts))]))
        asked = stored[:-1] if continues is not None else stored
        since_answer = next((i for i in range(len(asked) - 1, -1, -1) if asked[i].role != "user"), -1)
        meta = history.meta
        summary = meta.summary if meta else None
        text_chars = sum(len(m.content) for m in messages)
        turn = StoredTurn(
            memory=self, user_id=user_id, conversation_id=conversation_id, messages=messages, summary=summary,
            chars_per_token=meta.chars_per_token if meta else DEFAULT_CHARS_PER_TOKEN, new_user=new_user,
            edits=tuple(edits), replaces=tuple(replaces), question_position=question_position,
            question=tuple(m.text for m in asked[since_answer + 1:]),
            prompt_chars=text_chars + len(system or "") + len(summary or ""), unsummarized_chars=text_chars,
            temporary=request.temporary, continues=continues, order_key=meta.order_key if meta else "",
            new_conversation=meta is None)
        if continues is not None:  # one assistant message per turn: it keeps its id
            turn.message_id = continues.id
        return turn

    async def store_answer(self, turn: StoredTurn, message: StoredMessage, usage: Usage | None) -> None:
        """Store the assistant message of `turn`, then start a summarization if one is due."""
        sample = calibration_sample(turn.prompt_chars, len(turn.messages) + (1 if turn.summary else 0),
                                    usage.input_tokens if usage else None)
        conversation_id = turn.conversation_id
        assert conversation_id is not None  # a StoredTurn always names its conversation
        if turn.continues is not None:  # one assistant message per turn: updated, not duplicated
            await asyncio.to_thread(self.store.update_message, turn.user_id, conversation_id,
                                    replace(message, position=turn.continues.position,
                                            created_at=turn.continues.created_at))
        else:
            # The answer goes right after its question: that one key makes it the question's only answer.
            slot = answer_position(turn.question_position) if turn.question_position else None
            uncounted = turn.counted - 1  # the question, when `put_question` stored it uncounted
            move = not turn.keep_order
            if slot is not None and not turn.replaces:
                result = await asyncio.to_thread(self.store.put_answer, turn.user_id, conversation_id,
                                                 replace(message, position=slot), counted=turn.counted,
                                                 calibration=sample, move_order=move)
            else:
                result = await asyncio.to_thread(self.store.append_message, turn.user_id, conversation_id, message,
                                                 replaces=turn.replaces, calibration=sample, existing=True,
                                                 position=slot, uncounted=uncounted, move_order=move)
            outcome = result.outcome
            if outcome == "replaced_gone":
                # Another request answered the same message first (a concurrent regenerate, or a retry of
                # a message stored meanwhile): this answer replaces whatever answers it now.
                history = await asyncio.to_thread(self.store.load_recent, turn.user_id, conversation_id)
                asked = [i for i, m in enumerate(history.messages)
                         if m.role == "user" and m.position == turn.question_position]
                question = asked[0] if asked else max(
                    (i for i, m in enumerate(history.messages) if m.role == "user"), default=-1)
                after = history.messages[question + 1:]
                until = next((i for i, m in enumerate(after) if m.role == "user"), len(after))
                current = tuple(m for m in after[:until] if m.id != message.id)
                result = await asyncio.to_thread(self.store.append_message, turn.user_id, conversation_id, message,
                                                 replaces=current, calibration=sample, existing=True,
                                                 position=slot, uncounted=uncounted, move_order=move)
                outcome = result.outcome
            if outcome == "conversation_gone":
                get_logger().info("answer not stored: the conversation was deleted",
                                  extra={"conversation_id": conversation_id})
                if turn.counted == 2 and turn.question_position:  # its question, stored after the delete read
                    await asyncio.to_thread(self.store.delete_message, turn.user_id, conversation_id,
                                            turn.question_position)
                return
            if outcome != "stored":
                raise RuntimeError(f"the answer was not stored ({outcome})")
            turn._moved_to(result.order_key)
        threshold = self.settings.summary_trigger_tokens
        unsummarized = int((turn.unsummarized_chars + len(message.text)) / turn.chars_per_token)
        due = threshold > 0 and unsummarized >= threshold
        if self.trigger is None:
            return
        # Started off the answer's path (an asynchronous Lambda invoke is a round trip), and drained
        # before the response completes like any background work.
        if self.trigger.observes_turns and not turn.temporary:
            background.spawn(self.trigger.fire(turn.user_id, conversation_id, summarize=due, turn=message.id,
                                               texts=turn.question or None))
        elif due:
            background.spawn(self.trigger.fire(turn.user_id, conversation_id))
