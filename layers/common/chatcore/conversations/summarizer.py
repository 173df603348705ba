"""Rolling conversation summaries: summary(n+1) = summarize(summary(n) + the messages after it).

The chat function asks for one (`SummaryTrigger`) after storing an answer, once the tokens the
summary does not cover pass `SUMMARY_TRIGGER_TOKENS`: an asynchronous invoke of the summarize
Lambda when `SUMMARIZE_FUNCTION_NAME` is set, else an in-process background task (local use).
A run is idempotent and safe against a concurrent run: the summary is written only if the stored
one is still the one it extended (`ConversationStore.write_summary`).

The same path serves `TurnObserver`s (long-term memory extraction): after every non-temporary turn
the trigger passes the turn's id (its answer's message id) and, when small, the texts of the user
messages it answered (`turn_texts_fit`), and the observers get those texts (read from the history
when not passed), before any summarization of the same run.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from chatcore import background, errors
from chatcore.conversations.store import ConversationStore, StoredMessage, validate_conversation_id
from chatcore.events import ErrorEvent, Event, Finish, TextDelta, Usage, UsageReport
from chatcore.messages import Message
from chatcore.observability import emit_metrics, get_logger
from chatcore.routing.router import Router
from chatcore.routing.turn import ChatTurn
from chatcore.settings import Settings
from chatcore.streams import closing

SummaryOutcome = Literal["written", "up_to_date", "raced", "missing"]

MAX_SUMMARY_CHARS = 8_000
SUMMARY_OUTPUT_TOKENS = 1_024
SUMMARY_TIMEOUT_S = 90.0  # the summarize function's timeout is 120 s
SUMMARY_INSTRUCTIONS = (
    "You maintain the running summary of a conversation between a user and an AI assistant. "
    "Given the previous summary and the messages that followed it, write the updated summary: the "
    "facts, decisions, open questions and user preferences needed to continue the conversation. "
    "Write at most 300 words, in the conversation's language. Answer with the summary only."
)


async def collect_text(events: AsyncIterator[Event]) -> tuple[str, Usage | None]:
    """Run a routed turn to its end and return its text and usage (for non-interactive calls).

    An answer that fails after its first token raises, like one that fails before it.
    """
    parts: list[str] = []
    usage: Usage | None = None
    async with closing(events) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, UsageReport | Finish) and event.usage is not None:
                usage = event.usage
            elif isinstance(event, ErrorEvent):
                raise errors.ServiceUnavailableError(f"The model failed: {event.message}")
    return "".join(parts), usage


def summary_prompt(previous: str | None, messages: list[StoredMessage]) -> str:
    """The user turn of a summarization call: the previous summary, then the new messages."""
    lines = [f"Previous summary:\n{previous or '(none)'}", "", "New messages:"]
    for message in messages:
        lines.append(f"{message.role.capitalize()}: {message.text}")
    lines += ["", "Write the updated summary."]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SummaryResult:
    outcome: SummaryOutcome
    covered_messages: int = 0
    through: str | None = None


class TurnObserver(Protocol):
    """Work on a finished turn's user messages, off the response path (long-term memory extraction)."""

    async def observe_turn(self, user_id: str, conversation_id: str, turn_id: str,
                           user_messages: Sequence[str]) -> None: ...


TURN_READ_MESSAGES = 200  # how far back an answer is looked for (later turns may follow it)
MAX_TURN_TEXTS = 50  # the user messages a turn's event may carry...
MAX_TURN_TEXT_BYTES = 32_768  # ...and their UTF-8 size in all (the async invoke payload stays small)


def turn_texts_fit(texts: Any) -> bool:
    """Whether `texts` is a list of strings small enough for the summarize event's `texts`."""
    return (isinstance(texts, list | tuple) and len(texts) <= MAX_TURN_TEXTS
            and all(isinstance(t, str) for t in texts)
            and sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) <= MAX_TURN_TEXT_BYTES)


class ConversationSummarizer:
    """Extends a conversation's summary with the messages after it, leaving the newest ones verbatim."""

    def __init__(self, settings: Settings, store: ConversationStore, router: Router,
                 observers: Sequence[TurnObserver] = ()) -> None:
        self.settings = settings
        self.store = store
        self.router = router
        self.observers = tuple(observers)

    async def observe_turn(self, user_id: str, conversation_id: str, turn_id: str,
                           texts: Sequence[str] | None = None) -> bool:
        """Hand the user messages of turn `turn_id` (its answer's id) to the observers; False if it is gone.

        `texts`, when the chat side passed them, are those messages and nothing is read. The trade-off:
        nothing then checks that the answer still exists, so a turn whose answer a regenerate replaced
        is observed too (as is the regenerated one: the same question twice); extraction skips adds
        already remembered, so that costs a model call, not a duplicate memory. Without `texts` the
        newest messages are read and a replaced or deleted answer is not observed.
        """
        if not self.observers:
            return True
        if texts is None:
            texts = await asyncio.to_thread(self._turn_texts, user_id, conversation_id, turn_id)
            if texts is None:
                return False  # replaced by a regenerated answer (whose own turn is observed) or deleted
        for observer in self.observers:
            await observer.observe_turn(user_id, conversation_id, turn_id, texts)
        return True

    def _turn_texts(self, user_id: str, conversation_id: str, turn_id: str) -> list[str] | None:
        """The user messages answered by assistant message `turn_id`, oldest first; None if it is gone.

        Read newest first, a few items a page: the answer is almost always the newest message, so
        this costs one small read, not a page of history."""
        texts: list[str] = []
        found = False
        for count, message in enumerate(self.store.newest_messages(user_id, conversation_id)):
            if count >= TURN_READ_MESSAGES:
                break
            if not found:
                found = message.id == turn_id and message.role == "assistant"
            elif message.role == "user":
                texts.append(message.text)
            else:
                break
        return texts[::-1] if found else None

    async def summarize(self, user_id: str, conversation_id: str) -> SummaryResult:
        meta = await asyncio.to_thread(self.store.get_meta, user_id, conversation_id)
        if meta is None:
            return SummaryResult("missing")
        pending = await asyncio.to_thread(
            lambda: list(self.store.iter_messages(user_id, conversation_id, after=meta.summary_through)))
        keep = max(self.settings.summary_keep_recent, 0)
        candidates = pending[:len(pending) - keep] if keep else pending
        selected: list[StoredMessage] = []
        chars = len(meta.summary or "")
        for message in candidates:  # oldest first; what does not fit waits for the next run
            if selected and chars + len(message.text) > self.settings.summary_max_input_chars:
                break
            selected.append(message)
            chars += len(message.text)
        if not selected:
            return SummaryResult("up_to_date")
        text = await self._generate(meta.summary, selected, user_id, conversation_id)
        through = selected[-1].position
        written = await asyncio.to_thread(self.store.write_summary, user_id, conversation_id, text, through,
                                          meta.summary_through)
        return SummaryResult("written" if written else "raced", len(selected), through)

    async def _generate(self, previous: str | None, messages: list[StoredMessage], user_id: str,
                        conversation_id: str) -> str:
        """The summary text, from `SUMMARY_MODEL` through the router (aliases, fallback, breaker, cost)."""
        turn = ChatTurn(
            model=self.settings.summary_model,
            system=SUMMARY_INSTRUCTIONS,
            messages=(Message(role="user", content=summary_prompt(previous, messages)),),
            temperature=0.2,
            max_output_tokens=SUMMARY_OUTPUT_TOKENS,
            user_id=user_id,
            conversation_id=conversation_id,
            deadline_s=SUMMARY_TIMEOUT_S,
        )
        async with asyncio.timeout(SUMMARY_TIMEOUT_S):
            text, _ = await collect_text(self.router.stream(turn))
        text = text.strip()[:MAX_SUMMARY_CHARS]
        if not text:
            raise errors.TruncatedStreamError("The summary model returned no text.")
        return text


# --- triggering ---------------------------------------------------------------------------------

_lambda_clients: dict[str, Any] = {}
_lambda_lock = threading.Lock()


def _lambda_client(region: str) -> Any:
    with _lambda_lock:
        if region not in _lambda_clients:
            import boto3

            _lambda_clients[region] = boto3.session.Session().client("lambda", region_name=region)
        return _lambda_clients[region]


class SummaryTrigger:
    """Starts a summarization without waiting for it; its failures are logged, never raised."""

    def __init__(self, settings: Settings, summarizer: ConversationSummarizer) -> None:
        self.settings = settings
        self.summarizer = summarizer

    @property
    def observes_turns(self) -> bool:
        """True when every turn should be passed on (the summarizer has `TurnObserver`s)."""
        return bool(self.summarizer.observers)

    async def fire(self, user_id: str, conversation_id: str, *, summarize: bool = True,
                   turn: str | None = None, texts: Sequence[str] | None = None) -> None:
        """Start the run; `texts` are the user messages turn `turn` answered (spares the observer a read)."""
        try:
            if self.settings.summarize_function_name:
                await asyncio.to_thread(self._invoke, user_id, conversation_id, summarize, turn, texts)
            else:
                background.spawn(self._run_here(user_id, conversation_id, summarize, turn, texts), drained=False)
        except Exception as exc:
            get_logger().warning("summarization not started", extra={"error": type(exc).__name__})

    def _invoke(self, user_id: str, conversation_id: str, summarize: bool = True, turn: str | None = None,
                texts: Sequence[str] | None = None) -> None:
        event: dict[str, Any] = {"user_id": user_id, "conversation_id": conversation_id}
        if turn is not None:
            event.update(turn=turn, summarize=summarize)
            if texts is not None and turn_texts_fit(list(texts)):  # else the observer reads them
                event["texts"] = list(texts)
        _lambda_client(self.settings.aws_region).invoke(
            FunctionName=self.settings.summarize_function_name, InvocationType="Event",
            Payload=json.dumps(event).encode())

    async def _run_here(self, user_id: str, conversation_id: str, summarize: bool = True,
                        turn: str | None = None, texts: Sequence[str] | None = None) -> None:
        try:
            if turn is not None:
                await self.summarizer.observe_turn(user_id, conversation_id, turn, texts)
            if summarize:
                await self.summarizer.summarize(user_id, conversation_id)
        except Exception as exc:
            get_logger().warning("local summarization failed", extra={"error": type(exc).__name__})


# --- the summarize function's handler -----------------------------------------------------------


def handle_summarize_event(event: Mapping[str, Any], summarizer: ConversationSummarizer) -> dict[str, Any]:
    """Handle `{"user_id": ..., "conversation_id": ...}`, plus after a turn `"turn"` (its answer's id),
    `"summarize"` (false: observe the turn only) and, optionally, `"texts"` (the user messages the
    turn answered: at most `MAX_TURN_TEXTS` strings, `MAX_TURN_TEXT_BYTES` in all; absent, they are
    read from the history). A malformed event is reported and not retried; a failing model or table
    raises, so Lambda retries it and then sends it to the failure queue."""
    user_id = event.get("user_id") if isinstance(event, Mapping) else None
    conversation_id = event.get("conversation_id") if isinstance(event, Mapping) else None
    if not isinstance(user_id, str) or not user_id or not isinstance(conversation_id, str):
        get_logger("summarize").error("invalid summarize event")
        return {"status": "invalid", "error": "The event needs string 'user_id' and 'conversation_id'."}
    try:
        validate_conversation_id(conversation_id)
    except errors.RequestError as exc:
        return {"status": "invalid", "error": exc.message}
    turn = event.get("turn")
    if turn is not None and not isinstance(turn, str):
        return {"status": "invalid", "error": "'turn' must be a string."}
    texts = event.get("texts")
    if texts is not None and (turn is None or not isinstance(texts, list) or not turn_texts_fit(texts)):
        return {"status": "invalid", "error": f"'texts' must come with 'turn' and be a list of at most "
                                              f"{MAX_TURN_TEXTS} strings, {MAX_TURN_TEXT_BYTES} bytes in all."}
    try:
        if turn is not None:  # before the summary: the turn's messages are then still unsummarized
            asyncio.run(summarizer.observe_turn(user_id, conversation_id, turn, texts))
        if event.get("summarize", True) is False:
            return {"status": "observed", "covered_messages": 0, "through": None}
        result = asyncio.run(summarizer.summarize(user_id, conversation_id))
    except Exception as exc:
        emit_metrics("summarize", {"Outcome": "failed"}, {"SummaryErrors": (1, "Count")})
        get_logger("summarize").warning("summarization failed", extra={"conversation_id": conversation_id,
                                                                        "error": type(exc).__name__})
        raise  # Lambda retries, then sends the event to the failure queue
    emit_metrics("summarize", {"Outcome": result.outcome},
                 {"Summaries": (1, "Count"), "SummarizedMessages": (result.covered_messages, "Count")})
    get_logger("summarize").info("summarized", extra={"conversation_id": conversation_id,
                                                      "outcome": result.outcome,
                                                      "covered": result.covered_messages})
    return {"status": result.outcome, "covered_messages": result.covered_messages, "through": result.through}
