"""`ConversationStore`: conversations and their messages in the one DynamoDB table.

Keys (see docs/data-model.md):

- partition `pk = USER#<user>#CONV#<conversation>`: the user is part of the key, so no request can
  address another user's conversation;
- `sk = META`: the conversation's metadata (title, times, totals, summary, version);
- `sk = M#<16-digit position>`: one item per message, in order; a conversation of thousands of
  messages is thousands of small items, never one growing item. A continued conversation's next
  question goes at a position derived from the history read, its answer right after it
  (`next_question_position`, `answer_position`): conditional single-item puts then catch a retried
  request, a concurrent message and a second answer without a transaction (`put_question`,
  `put_answer`);
- `sk = I#<message id>`: a marker per message id, written with a question stored by a transaction
  (`append_message`: a new conversation, an edit, a lost position), so a retried request (same
  client message id) can never store a message twice;
- GSI `gsi1`: `gsi1pk = USER#<user>#CONVS`, `gsi1sk = <updated-at>#<conversation>` on the META item
  lists a user's conversations newest first.

Because `M#…` < `META` and `I#…` < `M#…`, one descending Query on `sk >= "M#"` returns the metadata
first and then the newest messages: the whole read of a chat turn is a single round trip.

All calls are blocking boto3 calls: async callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from chatcore import errors
from chatcore.dynamodb import client_for
from chatcore.messages import too_deep
from chatcore.observability import get_logger
from chatcore.settings import Settings
from chatcore.tokens import DEFAULT_CHARS_PER_TOKEN, PER_MESSAGE_OVERHEAD

MessageRole = Literal["user", "assistant"]
MessageStatus = Literal["complete", "error", "truncated", "aborted", "stopped"]

META_SK = "META"
MESSAGE_PREFIX = "M#"
ID_PREFIX = "I#"
CONVERSATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MESSAGE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
MAX_TITLE_CHARS = 200
CHARS_PER_TOKEN_RANGE = (1.5, 6.0)  # outside this a sample is more likely noise than a tokenizer
CALIBRATION_MIN_TOKENS = 50  # below this the ratio is too noisy to use
_APPEND_ATTEMPTS = 8
_BATCH = 25


def conversation_pk(user_id: str, conversation_id: str) -> str:
    return f"USER#{user_id}#CONV#{conversation_id}"


def user_index_pk(user_id: str) -> str:
    return f"USER#{user_id}#CONVS"


def validate_conversation_id(conversation_id: str) -> str:
    """The id as given, or `RequestError` when it could not be a key (`#`, spaces, too long...)."""
    if not CONVERSATION_ID.match(conversation_id):
        raise errors.RequestError("A conversation id is 1-128 characters of letters, digits, '.', '_', ':' or '-'.")
    return conversation_id


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _PositionClock:
    """Strictly increasing microsecond positions within this process (so one writer keeps its order)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return f"{MESSAGE_PREFIX}{self._last:016d}"


_positions = _PositionClock()


def position_after(position: str, step: int = 1) -> str:
    """The message position `step` microseconds after `position` (positions are only sort keys)."""
    return f"{MESSAGE_PREFIX}{int(position[len(MESSAGE_PREFIX):]) + step:016d}"


def answer_position(question: str) -> str:
    """Where the answer to the question at `question` is stored: right after it, one slot per
    question, so a conditional put of that one key is what makes an answer the only one."""
    return position_after(question, 1)


FIRST_POSITION = f"{MESSAGE_PREFIX}{1:016d}"  # a new conversation's first question


def next_question_position(history: RecentHistory) -> str:
    """Where a new question goes, derived from the history read.

    After an answer, the next position; after a question (its answer not stored yet, or never), the
    one after its answer's slot; in a conversation with no message (new, or only just created by a
    concurrent first turn), `FIRST_POSITION`. Two writers that read the same history derive the same
    position, so a conditional put detects both a retried request and a concurrent message."""
    if history.messages:
        last = history.messages[-1]
        return position_after(last.position, 2 if last.role == "user" else 1)
    if history.meta is not None and history.meta.summary_through:
        return position_after(history.meta.summary_through, 2)
    return FIRST_POSITION


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a conversation, as stored."""

    id: str
    role: MessageRole
    text: str
    position: str = ""  # the sort key; empty until stored
    status: MessageStatus = "complete"
    model: str | None = None
    usage: dict[str, int | None] | None = None
    finish_reason: str | None = None
    error_code: str | None = None
    created_at: str = ""
    parts: list[dict[str, Any]] | None = None  # the client's UI parts when they are more than plain text
    reasoning: str = ""
    storage_truncated: bool = False

    def ui_message(self) -> dict[str, Any]:
        """The message as an AI SDK UIMessage, ready for `useChat({messages})`."""
        if self.parts is not None:
            parts = self.parts
        else:
            parts = [{"type": "reasoning", "text": self.reasoning}] if self.reasoning else []
            parts.append({"type": "text", "text": self.text})
        metadata: dict[str, Any] = {"status": self.status, "createdAt": self.created_at}
        if self.model:
            metadata["model"] = self.model
        if self.usage:
            metadata["usage"] = self.usage
        if self.finish_reason:
            metadata["finishReason"] = self.finish_reason
        if self.error_code:
            metadata["errorCode"] = self.error_code
        if self.storage_truncated:
            metadata["storageTruncated"] = True
        return {"id": self.id, "role": self.role, "parts": parts, "metadata": metadata}


@dataclass(frozen=True, slots=True)
class ConversationMeta:
    """A conversation's metadata item."""

    conversation_id: str
    title: str = ""
    created_at: str = ""
    updated_at: str = ""
    message_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None
    summary: str | None = None
    summary_through: str | None = None  # position of the last message the summary covers
    version: int = 0
    calibration_chars: int = 0
    calibration_tokens: int = 0
    order_key: str = ""  # `gsi1sk`: where the conversation is in the user's list

    @property
    def chars_per_token(self) -> float:
        """Characters per token measured from the usage providers reported, clamped; 4.0 until known."""
        if self.calibration_tokens < CALIBRATION_MIN_TOKENS:
            return DEFAULT_CHARS_PER_TOKEN
        low, high = CHARS_PER_TOKEN_RANGE
        return min(max(self.calibration_chars / self.calibration_tokens, low), high)

    def summary_json(self) -> dict[str, Any]:
        """The listing form (`GET /api/conversations`)."""
        return {
            "id": self.conversation_id,
            "title": self.title,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "model": self.model,
            "messageCount": self.message_count,
        }


@dataclass(slots=True)
class RecentHistory:
    """What a chat turn reads: the metadata and the messages the summary does not cover, oldest first."""

    meta: ConversationMeta | None
    messages: list[StoredMessage] = field(default_factory=list)
    complete: bool = True  # False when `max_chars` stopped the read before the summary's end
    round_trips: int = 0


@dataclass(frozen=True, slots=True)
class Calibration:
    """One sample for the chars-per-token ratio: prompt characters and the tokens the provider counted."""

    chars: int
    tokens: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    stored: bool  # False when a message with this id was already stored (a retried request)
    message: StoredMessage
    outcome: AppendOutcome = "stored"
    order_key: str | None = None  # the list order key (`gsi1sk`) the write moved the conversation to


AppendOutcome = Literal["stored", "duplicate", "conversation_gone", "replaced_gone"]


# --- item (de)serialisation -------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _serialize(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    return {k: serializer.serialize(v) for k, v in item.items() if v is not None}


def _deserialize(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {k: _plain(deserializer.deserialize(v)) for k, v in item.items()}


def _message_from_item(item: dict[str, Any]) -> StoredMessage:
    """The stored message; parts that cannot be rendered again are left out (and logged), and a
    missing id or role is a `ValueError` (the readers skip that item: see `_readable`)."""
    message_id, role = item.get("id"), item.get("role")
    if not isinstance(message_id, str) or role not in ("user", "assistant"):
        raise ValueError(f"not a message (id {type(message_id).__name__}, role {str(role)[:20]!r})")
    usage = item.get("usage")
    return StoredMessage(
        id=message_id, role=role, text=_text(item.get("text")), position=item["sk"],
        status=item.get("status", "complete"), model=_text(item.get("model")) or None,
        usage=usage if isinstance(usage, dict) else None,
        finish_reason=_text(item.get("finish_reason")) or None, error_code=_text(item.get("error_code")) or None,
        created_at=_text(item.get("created_at")), parts=_parts_from_json(item.get("parts_json"), item),
        reasoning=_text(item.get("reasoning")), storage_truncated=bool(item.get("storage_truncated", False)),
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _parts_from_json(raw: Any, item: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A message's stored parts, keeping only those that can be rendered: JSON objects with a string
    `type`, nested at most `MAX_JSON_DEPTH` deep. None (the message shows its text) when none is left."""
    if not raw:
        return None
    try:
        parts = json.loads(raw) if isinstance(raw, str) else None
    except (ValueError, RecursionError):
        parts = None
    if not isinstance(parts, list):
        _unreadable(item, "parts are not a JSON array")
        return None
    kept = [part for part in parts
            if isinstance(part, dict) and isinstance(part.get("type"), str) and too_deep(part) is None]
    if len(kept) < len(parts):
        _unreadable(item, f"{len(parts) - len(kept)} of {len(parts)} parts left out")
    return kept if kept or not parts else None


def _unreadable(item: dict[str, Any], reason: str) -> None:
    get_logger().warning("stored message degraded", extra={"sk": str(item.get("sk", ""))[:40],
                                                           "message_id": str(item.get("id", ""))[:200],
                                                           "reason": reason})


def _readable(item: dict[str, Any]) -> StoredMessage | None:
    """`_message_from_item`, or None (logged) for an item no reader should fail on."""
    try:
        return _message_from_item(item)
    except Exception as exc:  # a malformed item must never make the whole conversation unreadable
        _unreadable(item, f"skipped: {type(exc).__name__}: {str(exc)[:200]}")
        return None


def _meta_from_item(item: dict[str, Any]) -> ConversationMeta:
    return ConversationMeta(
        conversation_id=item["pk"].rsplit("#CONV#", 1)[-1], title=item.get("title", ""),
        created_at=item.get("created_at", ""), updated_at=item.get("updated_at", ""),
        message_count=int(item.get("message_count", 0)), input_tokens=int(item.get("input_tokens", 0)),
        output_tokens=int(item.get("output_tokens", 0)), model=item.get("model"), summary=item.get("summary"),
        summary_through=item.get("summary_through"), version=int(item.get("version", 0)),
        calibration_chars=int(item.get("cal_chars", 0)), calibration_tokens=int(item.get("cal_tokens", 0)),
        order_key=_text(item.get("gsi1sk")),
    )


def _order_key(now: str, conversation_id: str) -> str:
    """The list order key (`gsi1sk`): the time of the conversation's last turn, then its id."""
    return f"{now}#{conversation_id}"


def message_bytes(text: str, parts: Sequence[dict[str, Any]] | None = None, reasoning: str = "") -> int:
    """The stored size of a message's content (what counts against `MAX_STORED_MESSAGE_BYTES`)."""
    size = len(text.encode()) + len(reasoning.encode())
    if parts is not None:
        size += len(json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode())
    return size


def _clip_utf8(text: str, max_bytes: int) -> str:
    return text.encode()[:max(max_bytes, 0)].decode(errors="ignore")


class ConversationStore:
    """Conversations, messages and summaries of every user, in one DynamoDB table."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        self.settings = settings
        self.table = settings.table_name
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client_for(self.settings)
        return self._client

    def _expires_at(self) -> int | None:
        days = self.settings.conversation_ttl_days
        return int(time.time()) + days * 86_400 if days > 0 else None

    # --- the chat turn's read ----------------------------------------------------------------

    def load_recent(self, user_id: str, conversation_id: str, max_chars: int | None = None,
                    page_size: int = 100) -> RecentHistory:
        """The metadata and the newest messages not covered by the summary, oldest first.

        One descending Query returns META then the newest messages; more pages are read only while
        there are unsummarized messages left and fewer than `max_chars` characters were read.
        """
        max_chars = self.settings.history_max_chars if max_chars is None else max_chars
        history = RecentHistory(meta=None)
        newest_first: list[StoredMessage] = []
        chars = 0
        start_key: dict[str, Any] | None = None
        stop_at = ""  # exclusive lower bound of positions to read: the summary's last message
        while True:
            request: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :pk AND sk >= :m",
                "ExpressionAttributeValues": {":pk": {"S": conversation_pk(user_id, conversation_id)},
                                              ":m": {"S": MESSAGE_PREFIX}},
                "ScanIndexForward": False,
                "ConsistentRead": True,
                "Limit": page_size,
            }
            if start_key:
                request["ExclusiveStartKey"] = start_key
            response = self.client.query(**request)
            history.round_trips += 1
            for raw in response.get("Items", []):
                item = _deserialize(raw)
                if item["sk"] == META_SK:
                    history.meta = _meta_from_item(item)
                    stop_at = history.meta.summary_through or ""
                    continue
                if item["sk"] <= stop_at:
                    start_key = None
                    break
                message = _readable(item)
                if message is None:
                    continue
                newest_first.append(message)
                chars += len(message.text)
                if chars >= max_chars:
                    history.complete = False
                    start_key = None
                    break
            else:
                start_key = response.get("LastEvaluatedKey")
            if not start_key:
                break
        history.messages = newest_first[::-1]
        return history

    # --- writes ----------------------------------------------------------------------------

    def create_conversation(self, user_id: str, conversation_id: str, title: str) -> str:
        """The metadata of a new conversation (title, times, list order key; no count yet: its first
        question is counted with its answer), before `put_question` stores that question. Returns
        the list order key. A concurrent creation of the same conversation is harmless: the title and
        creation time are set only if absent, and the counters gain nothing."""
        now = now_iso()
        self.client.update_item(**self._meta_update(conversation_pk(user_id, conversation_id), user_id, conversation_id,
                                                    None, now, self._expires_at(), title, 0, None, existing=False,
                                                    move_order=True))
        return _order_key(now, conversation_id)

    def put_question(self, user_id: str, conversation_id: str, message: StoredMessage) -> AppendOutcome | Literal["taken"]:
        """Store a new user message at its derived position (`next_question_position`) with one
        conditional `PutItem`: no transaction, no id marker, the metadata left for the answer.

        `duplicate` when that position holds this very message (a retried request racing the first),
        `taken` when it holds another one (a concurrent message: the caller falls back to
        `append_message`). The conversation's count includes the message once its answer is stored
        (`put_answer(..., counted=2)`)."""
        pk = conversation_pk(user_id, conversation_id)
        if not message.created_at:
            message = replace(message, created_at=now_iso())
        item = self._message_item(pk, message, self._expires_at())
        try:
            self.client.put_item(TableName=self.table, Item=_serialize(item),
                                 ConditionExpression="attribute_not_exists(pk)",
                                 ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            old = exc.response.get("Item") or {}
            return "duplicate" if old.get("id", {}).get("S") == message.id else "taken"
        return "stored"

    def put_answer(self, user_id: str, conversation_id: str, message: StoredMessage, *, counted: int = 1,
                   calibration: Calibration | None = None, move_order: bool = True) -> AppendResult:
        """Store an answer that replaces nothing at its question's answer slot (`answer_position`),
        then the metadata: a conditional `PutItem` and a conditional `UpdateItem`, no transaction.

        `replaced_gone` when the slot holds another answer (a concurrent regenerate or retry got
        there first: the caller replaces it with `append_message`), `conversation_gone` when the
        conversation was deleted meanwhile (the answer just written is deleted again). `counted`
        is how many messages the metadata gains: 2 when the question was stored by `put_question`.
        `move_order=False` leaves the list order key (the conversation is first in the list already)."""
        pk = conversation_pk(user_id, conversation_id)
        now = now_iso()
        expires_at = self._expires_at()
        if not message.created_at:
            message = replace(message, created_at=now)
        key = _serialize({"pk": pk, "sk": message.position})
        try:
            self.client.put_item(TableName=self.table, Item=_serialize(self._message_item(pk, message, expires_at)),
                                 ConditionExpression="attribute_not_exists(pk)")
        except self.client.exceptions.ConditionalCheckFailedException:
            return AppendResult(stored=False, message=message, outcome="replaced_gone")
        update = self._meta_update(pk, user_id, conversation_id, message, now, expires_at, None, counted,
                                   calibration, existing=True, move_order=move_order)
        try:
            self.client.update_item(**update)
        except self.client.exceptions.ConditionalCheckFailedException:
            self.client.delete_item(TableName=self.table, Key=key)  # no orphan in a deleted conversation
            return AppendResult(stored=False, message=message, outcome="conversation_gone")
        return AppendResult(stored=True, message=message, order_key=_order_key(now, conversation_id) if move_order else None)

    def append_message(self, user_id: str, conversation_id: str, message: StoredMessage, *,
                       title: str | None = None, replaces: Sequence[StoredMessage] = (),
                       calibration: Calibration | None = None, existing: bool = False,
                       position: str | None = None, uncounted: int = 0, move_order: bool | None = None) -> AppendResult:
        """Store `message` at the end of the conversation, creating the conversation if needed.

        One transaction writes the message, its id marker (so a retried request never stores a
        message twice: the outcome is then `duplicate`), the metadata (times, totals, version, title of
        a new conversation) and deletes the messages it `replaces` (a regenerated answer, or an edited
        message and everything after it), each only if it still exists (`replaced_gone` otherwise: a
        concurrent regenerate replaced it first). A replaced message with the same id as `message` is
        an edit: its marker moves to the new position. `existing=True` (an answer) writes nothing if
        the conversation was deleted meanwhile (`conversation_gone`), and writes no id marker (an
        answer's id is the server's own).

        `position` (an answer's slot, `answer_position`) fixes where the message goes: the slot
        must be free or hold one of the messages it `replaces` (overwritten in place), otherwise the
        outcome is `replaced_gone` (another answer to the same question is there now). Without it the
        message goes at the clock's next position, retried on a collision. `uncounted` messages
        stored without counting (a question stored by `put_question`) are counted now. The list
        order key moves with a question and stays with an answer unless `move_order` says otherwise.
        """
        move = not existing if move_order is None else move_order
        pk = conversation_pk(user_id, conversation_id)
        now = now_iso()
        expires_at = self._expires_at()
        if not message.created_at:
            message = replace(message, created_at=now)
        for attempt in range(_APPEND_ATTEMPTS):
            stored = replace(message, position=position or _positions.next())
            items, roles = self._append_items(pk, user_id, conversation_id, stored, now, expires_at, title,
                                              replaces, calibration, existing=existing, uncounted=uncounted,
                                              move_order=move)
            try:
                self.client.transact_write_items(TransactItems=items)
                return AppendResult(stored=True, message=stored,
                                    order_key=_order_key(now, conversation_id) if move else None)
            except self.client.exceptions.TransactionCanceledException as exc:
                reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
                failed = {role for role, reason in zip(roles, reasons, strict=False) if reason == "ConditionalCheckFailed"}
                if "marker" in failed:
                    return AppendResult(stored=False, message=message, outcome="duplicate")  # id already stored
                if "meta" in failed:
                    return AppendResult(stored=False, message=message, outcome="conversation_gone")
                if "replaced" in failed or (position is not None and "message" in failed):
                    return AppendResult(stored=False, message=message, outcome="replaced_gone")
                if attempt == _APPEND_ATTEMPTS - 1:
                    raise
            except self.client.exceptions.ClientError as exc:
                # A 5xx after the SDK's own retries (or its retry quota) ran out. Retrying is safe: if
                # the failed attempt did commit, the id marker (or the fixed slot) turns the retry into
                # `duplicate` (or `replaced_gone`, which the caller resolves by reading again).
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) < 500:
                    raise
                if attempt == _APPEND_ATTEMPTS - 1:
                    raise
            # A position taken by another writer, a conflicting transaction or a server error: back off.
            time.sleep(random.uniform(0, 0.01 * 2 ** attempt))
        raise AssertionError("unreachable")

    def update_message(self, user_id: str, conversation_id: str, message: StoredMessage) -> None:
        """Overwrite a stored message in place (its id and position kept): a turn continued after a
        client tool's output or an approval answer updates its one assistant message."""
        pk = conversation_pk(user_id, conversation_id)
        now = now_iso()
        item = self._message_item(pk, message, self._expires_at())
        usage = message.usage or {}
        values = {":now": now, ":one": 1, ":in": int(usage.get("inputTokens") or 0),
                  ":out": int(usage.get("outputTokens") or 0)}
        self.client.transact_write_items(TransactItems=[
            {"Put": {"TableName": self.table, "Item": _serialize(item), "ConditionExpression": "attribute_exists(pk)"}},
            {"Update": {"TableName": self.table, "Key": _serialize({"pk": pk, "sk": META_SK}),
                        "UpdateExpression": "SET updated_at = :now ADD version :one, input_tokens :in, "
                                            "output_tokens :out",
                        "ExpressionAttributeValues": _serialize(values)}},
        ])

    @staticmethod
    def _message_item(pk: str, message: StoredMessage, expires_at: int | None) -> dict[str, Any]:
        return {
            "pk": pk, "sk": message.position, "type": "message", "id": message.id, "role": message.role,
            "text": message.text, "status": message.status, "created_at": message.created_at,
            "model": message.model, "usage": message.usage, "finish_reason": message.finish_reason,
            "error_code": message.error_code, "reasoning": message.reasoning or None,
            "parts_json": json.dumps(message.parts, ensure_ascii=False) if message.parts is not None else None,
            "storage_truncated": True if message.storage_truncated else None, "expires_at": expires_at,
        }

    def _meta_update(self, pk: str, user_id: str, conversation_id: str, message: StoredMessage | None, now: str,
                     expires_at: int | None, title: str | None, count: int, calibration: Calibration | None, *,
                     existing: bool, move_order: bool) -> dict[str, Any]:
        """The metadata's `UpdateItem`: times, totals, version (and title, order key, calibration), for
        `message` stored now (None: the conversation is only being created)."""
        usage = (message.usage if message else None) or {}
        # The list's order key moves once a turn, and not at all when the conversation is first in the
        # list already: the index entry is then rewritten in place (1 write unit) instead of moved (2).
        order = "gsi1sk = :gs" if move_order else "gsi1sk = if_not_exists(gsi1sk, :gs)"
        sets = ["#type = :meta", "conversation_id = :cid", "user_id = :uid",
                "created_at = if_not_exists(created_at, :now)", "updated_at = :now", "gsi1pk = :g", order]
        adds = ["version :one", "message_count :count", "input_tokens :in", "output_tokens :out"]
        values: dict[str, Any] = {
            ":meta": "conversation", ":cid": conversation_id, ":uid": user_id, ":now": now,
            ":g": user_index_pk(user_id), ":gs": _order_key(now, conversation_id), ":one": 1,
            ":count": count, ":in": int(usage.get("inputTokens") or 0), ":out": int(usage.get("outputTokens") or 0),
        }
        if expires_at is not None:
            sets.append("expires_at = :exp")
            values[":exp"] = expires_at
        if title:
            sets.append("title = if_not_exists(title, :title)")
            values[":title"] = title
        if message is not None and message.model:
            sets.append("model = :model")
            values[":model"] = message.model
        if calibration is not None:
            adds += ["cal_chars :cc", "cal_tokens :ct"]
            values[":cc"] = calibration.chars
            values[":ct"] = calibration.tokens
        update: dict[str, Any] = {
            "TableName": self.table, "Key": _serialize({"pk": pk, "sk": META_SK}),
            "UpdateExpression": "SET " + ", ".join(sets) + " ADD " + ", ".join(adds),
            "ExpressionAttributeNames": {"#type": "type"}, "ExpressionAttributeValues": _serialize(values)}
        if existing:  # an answer must not bring back a conversation deleted while it streamed
            update["ConditionExpression"] = "attribute_exists(pk)"
        return update

    def _append_items(self, pk: str, user_id: str, conversation_id: str, message: StoredMessage, now: str,
                      expires_at: int | None, title: str | None, replaces: Sequence[StoredMessage],
                      calibration: Calibration | None, *, existing: bool = False, uncounted: int = 0,
                      move_order: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
        """The transaction's items, and the role of each (`message`, `marker`, `meta`, `replaced`,
        `other`) to read its cancellation reasons by."""
        in_place = [old for old in replaces if old.position == message.position]  # an answer's slot, reused
        put: dict[str, Any] = {"TableName": self.table, "Item": _serialize(self._message_item(pk, message, expires_at))}
        if in_place:
            put["ConditionExpression"] = "id = :old"
            put["ExpressionAttributeValues"] = _serialize({":old": in_place[0].id})
        else:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        items: list[dict[str, Any]] = [{"Put": put}]
        roles = ["message"]
        if not existing:
            edit = any(old.id == message.id for old in replaces)  # the same id, new content: moved, not refused
            marker = {"pk": pk, "sk": ID_PREFIX + message.id, "type": "message_id", "position": message.position,
                      "expires_at": expires_at}
            marker_put: dict[str, Any] = {"TableName": self.table, "Item": _serialize(marker)}
            if not edit:
                marker_put["ConditionExpression"] = "attribute_not_exists(pk)"
            items.append({"Put": marker_put})
            roles.append("marker")
        items.append({"Update": self._meta_update(pk, user_id, conversation_id, message, now, expires_at, title,
                                                  1 - len(replaces) + uncounted, calibration, existing=existing,
                                                  move_order=move_order)})
        roles.append("meta")
        for old in replaces:
            if old.position != message.position:
                # Only if still there: of two concurrent regenerates, the second must not add a second answer.
                items.append({"Delete": {"TableName": self.table, "Key": _serialize({"pk": pk, "sk": old.position}),
                                         "ConditionExpression": "attribute_exists(pk)"}})
                roles.append("replaced")
            if old.id != message.id:
                items.append({"Delete": {"TableName": self.table,
                                         "Key": _serialize({"pk": pk, "sk": ID_PREFIX + old.id})}})
                roles.append("other")
        return items, roles

    def delete_message(self, user_id: str, conversation_id: str, position: str) -> None:
        """Delete one message item (a question left behind when its conversation was deleted meanwhile)."""
        self.client.delete_item(TableName=self.table,
                                Key=_serialize({"pk": conversation_pk(user_id, conversation_id), "sk": position}))

    def import_messages(self, user_id: str, conversation_id: str, messages: Sequence[StoredMessage],
                        title: str = "") -> list[StoredMessage]:
        """Bulk-load a new conversation (migrations, benchmarks): BatchWriteItem, 25 items a request.

        Unlike `append_message` there is no duplicate check: use it only for a conversation that does
        not exist yet. Returns the messages with their positions.
        """
        pk = conversation_pk(user_id, conversation_id)
        now = now_iso()
        expires_at = self._expires_at()
        stored = [replace(m, position=_positions.next(), created_at=m.created_at or now) for m in messages]
        requests: list[dict[str, Any]] = []
        for message in stored:
            requests.append({"PutRequest": {"Item": _serialize(self._message_item(pk, message, expires_at))}})
        meta = {
            "pk": pk, "sk": META_SK, "type": "conversation", "conversation_id": conversation_id, "user_id": user_id,
            "title": title, "created_at": now, "updated_at": now, "gsi1pk": user_index_pk(user_id),
            "gsi1sk": f"{now}#{conversation_id}", "expires_at": expires_at, "version": 1,
            "message_count": len(stored), "input_tokens": 0, "output_tokens": 0,
        }
        requests.append({"PutRequest": {"Item": _serialize(meta)}})
        for start in range(0, len(requests), _BATCH):
            self._batch_write(requests[start:start + _BATCH])
        return stored

    # --- the history API -------------------------------------------------------------------

    def get_meta(self, user_id: str, conversation_id: str) -> ConversationMeta | None:
        response = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                        Key=_serialize({"pk": conversation_pk(user_id, conversation_id),
                                                        "sk": META_SK}))
        item = response.get("Item")
        return _meta_from_item(_deserialize(item)) if item else None

    def iter_messages(self, user_id: str, conversation_id: str, after: str | None = None,
                      page_size: int = 500) -> Iterator[StoredMessage]:
        """Every message (after position `after`, when given), oldest first, page by page."""
        for message in self._messages(user_id, conversation_id, after or MESSAGE_PREFIX, page_size, newest_first=False):
            if message.position != after:  # BETWEEN is inclusive
                yield message

    def newest_messages(self, user_id: str, conversation_id: str, page_size: int = 8) -> Iterator[StoredMessage]:
        """The messages newest first, read a small page at a time as the caller iterates: a reader that
        needs only the last turn pays for a few items, not for a page of history."""
        return self._messages(user_id, conversation_id, MESSAGE_PREFIX, page_size, newest_first=True)

    def _messages(self, user_id: str, conversation_id: str, lower: str, page_size: int, *,
                  newest_first: bool) -> Iterator[StoredMessage]:
        """The readable messages from position `lower` on, one Query page at a time as the caller iterates."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {":pk": {"S": conversation_pk(user_id, conversation_id)},
                                          ":lo": {"S": lower}, ":hi": {"S": MESSAGE_PREFIX + "~"}},
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
            "Limit": page_size,
        }
        while True:
            response = self.client.query(**request)
            for raw in response.get("Items", []):
                message = _readable(_deserialize(raw))
                if message is not None:
                    yield message
            start_key = response.get("LastEvaluatedKey")
            if not start_key:
                return
            request["ExclusiveStartKey"] = start_key

    def list_conversations(self, user_id: str, limit: int = 20,
                           cursor: str | None = None) -> tuple[list[ConversationMeta], str | None]:
        """The user's conversations, most recently updated first, and the cursor of the next page."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :g",
            "ExpressionAttributeValues": {":g": {"S": user_index_pk(user_id)}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            request["ExclusiveStartKey"] = decode_cursor(cursor, user_id)
        response = self.client.query(**request)
        conversations = [_meta_from_item(_deserialize(raw)) for raw in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return conversations, encode_cursor(last) if last else None

    def rename(self, user_id: str, conversation_id: str, title: str) -> ConversationMeta:
        """Set the title; `NotFoundError` when the caller has no such conversation."""
        try:
            response = self.client.update_item(
                TableName=self.table,
                Key=_serialize({"pk": conversation_pk(user_id, conversation_id), "sk": META_SK}),
                UpdateExpression="SET title = :t ADD version :one",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=_serialize({":t": title, ":one": 1}),
                ReturnValues="ALL_NEW",
            )
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            raise errors.NotFoundError("Conversation not found.") from exc
        return _meta_from_item(_deserialize(response["Attributes"]))

    def delete(self, user_id: str, conversation_id: str) -> int:
        """Delete the conversation and all its items; returns how many items were deleted (0: none existed).

        The metadata goes last, so an interrupted delete leaves a listed conversation that a retry
        finishes, never invisible orphans.
        """
        pk = conversation_pk(user_id, conversation_id)
        keys: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}}, "ProjectionExpression": "pk, sk",
            "ConsistentRead": True,
        }
        while True:
            response = self.client.query(**request)
            keys.extend(response.get("Items", []))
            if not response.get("LastEvaluatedKey"):
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        keys.sort(key=lambda k: k["sk"]["S"] == META_SK)
        requests = [{"DeleteRequest": {"Key": key}} for key in keys]
        for start in range(0, len(requests), _BATCH):
            self._batch_write(requests[start:start + _BATCH])
        return len(keys)

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        """One BatchWriteItem, retrying its unprocessed items with backoff until all are done."""
        pending = requests
        for attempt in range(8):
            response = self.client.batch_write_item(RequestItems={self.table: pending})
            pending = response.get("UnprocessedItems", {}).get(self.table, [])
            if not pending:
                return
            time.sleep(min(0.05 * 2 ** attempt, 2.0) * random.uniform(0.5, 1.0))
        raise errors.ServiceUnavailableError("The table is busy; try again.", retry_after=1.0)

    # --- summaries -------------------------------------------------------------------------

    def write_summary(self, user_id: str, conversation_id: str, summary: str, through: str,
                      expected_through: str | None) -> bool:
        """Store a summary covering messages up to position `through`, only if the stored summary is
        still the one it was built on (`expected_through`) and it moves forward. False if another
        run got there first: two racing summarizations leave exactly one consistent summary."""
        values: dict[str, Any] = {":s": summary, ":t": through, ":one": 1}
        if expected_through is None:
            condition = "attribute_exists(pk) AND attribute_not_exists(summary_through)"
        else:
            condition = "attribute_exists(pk) AND summary_through = :old AND :t > :old"
            values[":old"] = expected_through
        try:
            self.client.update_item(
                TableName=self.table,
                Key=_serialize({"pk": conversation_pk(user_id, conversation_id), "sk": META_SK}),
                UpdateExpression="SET summary = :s, summary_through = :t, summarized_at = :now ADD version :one",
                ConditionExpression=condition,
                ExpressionAttributeValues=_serialize({**values, ":now": now_iso()}),
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True


# --- cursors -----------------------------------------------------------------------------------


def encode_cursor(last_evaluated_key: dict[str, Any]) -> str:
    """An opaque page cursor: the LastEvaluatedKey as URL-safe base64 JSON."""
    plain = {k: v["S"] for k, v in last_evaluated_key.items()}
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, user_id: str) -> dict[str, Any]:
    """The ExclusiveStartKey of a cursor, after checking it is well formed and belongs to `user_id`."""
    invalid = errors.RequestError("Invalid cursor.")
    if len(cursor) > 2048:
        raise invalid
    try:
        plain = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise invalid from exc
    if (not isinstance(plain, dict) or set(plain) != {"pk", "sk", "gsi1pk", "gsi1sk"}
            or not all(isinstance(v, str) for v in plain.values())
            or plain["gsi1pk"] != user_index_pk(user_id)
            or not plain["pk"].startswith(f"USER#{user_id}#CONV#") or plain["sk"] != META_SK):
        raise invalid
    return {k: {"S": v} for k, v in plain.items()}


def calibration_sample(prompt_chars: int, message_count: int, reported_input_tokens: int | None,
                       max_prompt_chars: int = 16_000) -> Calibration | None:
    """A chars-per-token sample from one answered turn, or None when it would mislead.

    Only prompts small enough that no deployment would have trimmed them count, since the
    characters must be those the provider actually counted. The per-message framing tokens are
    taken off first so the ratio measures the text alone.
    """
    if not reported_input_tokens or prompt_chars <= 0 or prompt_chars > max_prompt_chars:
        return None
    text_tokens = reported_input_tokens - PER_MESSAGE_OVERHEAD * message_count
    if text_tokens <= 0:
        return None
    return Calibration(chars=prompt_chars, tokens=text_tokens)
