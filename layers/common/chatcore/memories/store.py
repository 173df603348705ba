"""`MemoryStore`: a user's long-term memories, their setting and extraction markers, in the one table.

Keys (docs/data-model.md), all in the user's own partition `pk = USER#<user>#MEM`:

- `sk = MEM#<id>`: one memory (`text`, `kind`, `embedding`, `embedding_model`, `source_conversation`,
  `created_at`, `updated_at`) plus `mem_user = <user>`, the partition attribute of the vector index:
  only memory items carry it, so nothing else is ever indexed or searched;
- `sk = MEMTURNS`: the ids of the last `MAX_CHANGED_TURNS` turns whose extraction changed memories
  (`turns`, oldest first, and `version`, for conditional writes): a redelivered turn among them is
  skipped. One small bounded item, written only when a turn changed something; a turn that changed
  nothing is not recorded (run again, it adds nothing: extraction skips texts already remembered).
- `sk = SETTINGS`: the user's choice (`enabled`);

Ids are time-ordered (`MEM#` + 16 hex digits of microseconds + 6 random), and `MEM#…` < `MEMTURNS` <
`SETTINGS` (`#` sorts before `T`), so one descending Query on `sk BETWEEN "MEM#" AND "SETTINGS"`
returns the setting first, then the turn log, then the newest memories: the chat turn's digest and
everything extraction reads are one round trip. The user id always comes from the verified credential
(`Principal.user_id`).

All calls are blocking boto3 calls: async callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from chatcore import errors
from chatcore.dynamodb import client_for
from chatcore.settings import Settings

MemoryKind = Literal["fact", "preference"]
KINDS: tuple[str, ...] = ("fact", "preference")
MEMORY_PREFIX = "MEM#"
SETTINGS_SK = "SETTINGS"
TURNS_SK = "MEMTURNS"  # between every `MEM#…` and `SETTINGS`: inside the digest's range
USER_ATTRIBUTE = "mem_user"  # the vector index's partition attribute
VECTOR_ATTRIBUTE = "embedding"
MODEL_ATTRIBUTE = "embedding_model"
MAX_MEMORY_CHARS = 500
MAX_MEMORIES_PER_USER = 2_000
MEMORY_ID = re.compile(r"^m[0-9a-f]{22}$")
MAX_CHANGED_TURNS = 20  # turn ids kept in `MEMTURNS` (a message id is 36 characters: under 1 KB)
_BATCH = 25


def memory_pk(user_id: str) -> str:
    return f"USER#{user_id}#MEM"


def new_memory_id() -> str:
    return f"m{time.time_ns() // 1000:016x}{secrets.token_hex(3)}"


def validate_memory_id(memory_id: str) -> str:
    if not MEMORY_ID.match(memory_id):
        raise errors.NotFoundError("Memory not found.")
    return memory_id


def clean_memory_text(text: str) -> str:
    """One line of at most `MAX_MEMORY_CHARS` characters; `RequestError` when nothing is left."""
    text = " ".join(text.split())
    if not text:
        raise errors.RequestError("A memory needs some text.")
    return text[:MAX_MEMORY_CHARS]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class MemoryItem:
    """One remembered fact or preference of one user."""

    id: str
    user_id: str
    text: str
    kind: str = "fact"
    source_conversation: str | None = None
    created_at: str = ""
    updated_at: str = ""
    embedding_model: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The privacy API's form (`GET /api/memories`)."""
        return {"id": self.id, "text": self.text, "kind": self.kind, "sourceConversation": self.source_conversation,
                "createdAt": self.created_at, "updatedAt": self.updated_at}


@dataclass(frozen=True, slots=True)
class TurnLog:
    """The `MEMTURNS` item: the latest turns whose extraction changed memories, oldest first."""

    turns: tuple[str, ...] = ()
    version: int | None = None  # None: no item yet


@dataclass(frozen=True, slots=True)
class Digest:
    """What a chat turn reads with the history: the setting, the turn log and the newest memories (no vectors)."""

    enabled: bool
    memories: tuple[MemoryItem, ...]
    has_more: bool  # the user has more memories than the digest holds: vector search may add some
    turn_log: TurnLog = TurnLog()


def _turn_log(raw: dict[str, Any]) -> TurnLog:
    turns = tuple(v["S"] for v in raw.get("turns", {}).get("L", []) if isinstance(v, dict) and "S" in v)
    version = raw.get("version", {}).get("N")
    return TurnLog(turns, int(version) if version is not None else 0)


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def item_from(user_id: str, raw: dict[str, Any]) -> MemoryItem | None:
    """The memory in a raw item, or None when it is not one of `user_id`'s memories (re-checked here)."""
    sk = raw.get("sk", {}).get("S", "")
    if (raw.get("pk", {}).get("S") != memory_pk(user_id) or raw.get(USER_ATTRIBUTE, {}).get("S") != user_id
            or not sk.startswith(MEMORY_PREFIX)):
        return None
    return MemoryItem(
        id=sk[len(MEMORY_PREFIX):], user_id=user_id, text=raw.get("text", {}).get("S", ""),
        kind=raw.get("kind", {}).get("S", "fact"), source_conversation=raw.get("source_conversation", {}).get("S"),
        created_at=raw.get("created_at", {}).get("S", ""), updated_at=raw.get("updated_at", {}).get("S", ""),
        embedding_model=raw.get(MODEL_ATTRIBUTE, {}).get("S"),
    )


def vector_attribute(vector: Sequence[float]) -> dict[str, Any]:
    """A vector as DynamoDB stores it for a vector index: a list of numbers (float32 precision is enough)."""
    return {"L": [{"N": format(float(v), ".7g")} for v in vector]}


def vector_from(raw: dict[str, Any]) -> list[float] | None:
    values = raw.get(VECTOR_ATTRIBUTE, {}).get("L")
    if not isinstance(values, list):
        return None
    try:
        return [float(Decimal(v["N"])) for v in values]
    except (KeyError, TypeError, ArithmeticError, ValueError):
        return None


class MemoryStore:
    """Memories, the memory setting and extraction markers of every user."""

    DIGEST_PROJECTION = "pk, sk, #text, kind, source_conversation, created_at, updated_at, mem_user, enabled, " \
                        "embedding_model, turns, version"

    def __init__(self, settings: Settings, client: Any | None = None, *, critical_client: Any | None = None) -> None:
        self.settings = settings
        self.table = settings.table_name
        self._client = client
        self._critical = critical_client or client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client_for(self.settings)
        return self._client

    @property
    def critical_client(self) -> Any:
        """Short timeouts, for the read that sits before the first token."""
        if self._critical is None:
            self._critical = client_for(self.settings, critical=True)
        return self._critical

    # --- the chat turn's read ----------------------------------------------------------------

    def digest(self, user_id: str, size: int, *, consistent: bool = True) -> Digest:
        """The setting, the turn log and the `size` newest memories, in one descending Query (no embeddings).

        `consistent=False` (the chat turn's read) costs half: memories are written after a turn, off
        its path, and an eventually consistent read is usually behind by well under a second.

        Descending, `SETTINGS` and `MEMTURNS` are the range's first keys, so they are always in the
        one page read, whatever `Limit` stops at: the digest's `enabled` and `turn_log` are exact
        (`has_more` concerns memories only)."""
        response = self.critical_client.query(
            TableName=self.table, KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={":pk": _s(memory_pk(user_id)), ":lo": _s(MEMORY_PREFIX),
                                       ":hi": _s(SETTINGS_SK)},
            ExpressionAttributeNames={"#text": "text"}, ProjectionExpression=self.DIGEST_PROJECTION,
            ScanIndexForward=False, ConsistentRead=consistent, Limit=size + 3)
        enabled = True
        turn_log = TurnLog()
        memories: list[MemoryItem] = []
        for raw in response.get("Items", []):
            if raw["sk"]["S"] == SETTINGS_SK:
                enabled = raw.get("enabled", {}).get("BOOL", True)
                continue
            if raw["sk"]["S"] == TURNS_SK:
                turn_log = _turn_log(raw)
                continue
            memory = item_from(user_id, raw)
            if memory is not None:
                memories.append(memory)
        has_more = len(memories) > size or bool(response.get("LastEvaluatedKey"))
        return Digest(enabled=enabled, memories=tuple(memories[:size]), has_more=has_more, turn_log=turn_log)

    # --- settings ----------------------------------------------------------------------------

    def enabled(self, user_id: str) -> bool:
        """The setting alone (the privacy API); a turn reads it with the digest instead."""
        response = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                        Key={"pk": _s(memory_pk(user_id)), "sk": _s(SETTINGS_SK)})
        return bool(response.get("Item", {}).get("enabled", {}).get("BOOL", True))

    def set_enabled(self, user_id: str, enabled: bool) -> None:
        self.client.put_item(TableName=self.table, Item={"pk": _s(memory_pk(user_id)), "sk": _s(SETTINGS_SK),
                                                         "type": _s("memory_settings"), "enabled": {"BOOL": enabled},
                                                         "updated_at": _s(now_iso())})

    # --- memories ----------------------------------------------------------------------------

    def get(self, user_id: str, memory_id: str) -> MemoryItem | None:
        response = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                        Key={"pk": _s(memory_pk(user_id)), "sk": _s(MEMORY_PREFIX + memory_id)})
        item = response.get("Item")
        return item_from(user_id, item) if item else None

    def list(self, user_id: str, limit: int = 50, cursor: str | None = None,
             with_vectors: bool = False) -> tuple[list[tuple[MemoryItem, list[float] | None]], str | None]:
        """The user's memories, newest first, and the cursor of the next page."""
        request: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "pk = :pk AND begins_with(sk, :m)",
            "ExpressionAttributeValues": {":pk": _s(memory_pk(user_id)), ":m": _s(MEMORY_PREFIX)},
            "ScanIndexForward": False, "ConsistentRead": True, "Limit": limit,
        }
        if cursor:
            request["ExclusiveStartKey"] = decode_cursor(cursor, user_id)
        response = self.client.query(**request)
        found = []
        for raw in response.get("Items", []):
            memory = item_from(user_id, raw)
            if memory is not None:
                found.append((memory, vector_from(raw) if with_vectors else None))
        last = response.get("LastEvaluatedKey")
        return found, encode_cursor(last) if last else None

    def put(self, user_id: str, text: str, kind: str, vector: Sequence[float], embedding_model: str,
            source_conversation: str | None, memory_id: str | None = None) -> MemoryItem:
        """Store a new memory (its vector must come from the index's embedder, `embedding_model`)."""
        memory_id = memory_id or new_memory_id()
        now = now_iso()
        memory = MemoryItem(id=memory_id, user_id=user_id, text=clean_memory_text(text),
                            kind=kind if kind in KINDS else "fact", source_conversation=source_conversation,
                            created_at=now, updated_at=now, embedding_model=embedding_model)
        self._check_vector(vector)
        item: dict[str, Any] = {
            "pk": _s(memory_pk(user_id)), "sk": _s(MEMORY_PREFIX + memory_id), "type": _s("memory"),
            USER_ATTRIBUTE: _s(user_id), "text": _s(memory.text), "kind": _s(memory.kind),
            VECTOR_ATTRIBUTE: vector_attribute(vector), MODEL_ATTRIBUTE: _s(embedding_model),
            "created_at": _s(now), "updated_at": _s(now),
        }
        if source_conversation:
            item["source_conversation"] = _s(source_conversation)
        self.client.put_item(TableName=self.table, Item=item)
        return memory

    def update(self, user_id: str, memory_id: str, text: str, vector: Sequence[float], embedding_model: str,
               kind: str | None = None) -> MemoryItem:
        """Replace a memory's text and vector; `NotFoundError` when the user has no such memory."""
        self._check_vector(vector)
        names = {"#text": "text", "#vec": VECTOR_ATTRIBUTE, "#model": MODEL_ATTRIBUTE, "#user": USER_ATTRIBUTE}
        values: dict[str, Any] = {":t": _s(clean_memory_text(text)), ":v": vector_attribute(vector),
                                  ":m": _s(embedding_model), ":now": _s(now_iso()), ":u": _s(user_id)}
        expression = "SET #text = :t, #vec = :v, #model = :m, updated_at = :now"
        if kind in KINDS:
            expression += ", kind = :k"
            values[":k"] = _s(kind)
        try:
            response = self.client.update_item(
                TableName=self.table, Key={"pk": _s(memory_pk(user_id)), "sk": _s(MEMORY_PREFIX + memory_id)},
                UpdateExpression=expression, ConditionExpression="attribute_exists(pk) AND #user = :u",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values, ReturnValues="ALL_NEW")
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            raise errors.NotFoundError("Memory not found.") from exc
        memory = item_from(user_id, response["Attributes"])
        assert memory is not None
        return memory

    def delete(self, user_id: str, memory_id: str) -> bool:
        """Delete one memory; False when the user had no such memory."""
        response = self.client.delete_item(
            TableName=self.table, Key={"pk": _s(memory_pk(user_id)), "sk": _s(MEMORY_PREFIX + memory_id)},
            ReturnValues="ALL_OLD")
        return "Attributes" in response

    def delete_all(self, user_id: str, *, everything: bool = False) -> int:
        """Delete every memory of the user (and, with `everything`, the setting and markers too)."""
        request: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": _s(memory_pk(user_id))}, "ProjectionExpression": "pk, sk",
            "ConsistentRead": True,
        }
        if not everything:
            request["KeyConditionExpression"] += " AND begins_with(sk, :m)"
            request["ExpressionAttributeValues"][":m"] = _s(MEMORY_PREFIX)
        keys: list[dict[str, Any]] = []
        while True:
            response = self.client.query(**request)
            keys.extend(response.get("Items", []))
            if not response.get("LastEvaluatedKey"):
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        for start in range(0, len(keys), _BATCH):
            pending = [{"DeleteRequest": {"Key": key}} for key in keys[start:start + _BATCH]]
            for _ in range(8):
                result = self.client.batch_write_item(RequestItems={self.table: pending})
                pending = result.get("UnprocessedItems", {}).get(self.table, [])
                if not pending:
                    break
                time.sleep(0.1)
            else:
                raise errors.ServiceUnavailableError("The table is busy; try again.", retry_after=1.0)
        return sum(1 for key in keys if key["sk"]["S"].startswith(MEMORY_PREFIX))

    def exists(self, user_id: str, memory_ids: Sequence[str]) -> set[str]:
        """Which of `memory_ids` the user still has (a consistent read: deleted memories are gone)."""
        found: set[str] = set()
        ids = list(dict.fromkeys(memory_ids))
        for start in range(0, len(ids), 100):
            keys = [{"pk": _s(memory_pk(user_id)), "sk": _s(MEMORY_PREFIX + i)} for i in ids[start:start + 100]]
            request = {self.table: {"Keys": keys, "ConsistentRead": True, "ProjectionExpression": "pk, sk, mem_user"}}
            while request:
                response = self.client.batch_get_item(RequestItems=request)
                for raw in response.get("Responses", {}).get(self.table, []):
                    memory = item_from(user_id, {**raw, "text": _s("")})
                    if memory is not None:
                        found.add(memory.id)
                request = response.get("UnprocessedKeys") or {}
        return found

    # --- extraction markers --------------------------------------------------------------------

    def turn_log(self, user_id: str) -> TurnLog:
        response = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                        Key={"pk": _s(memory_pk(user_id)), "sk": _s(TURNS_SK)})
        item = response.get("Item")
        return _turn_log(item) if item else TurnLog()

    def record_turn(self, user_id: str, turn_id: str, seen: TurnLog, attempts: int = 3) -> bool:
        """Add `turn_id` to the user's turn log (the newest `MAX_CHANGED_TURNS` kept), `seen` being the log
        as last read. A conditional write on the log's version: a concurrent run's write is re-read and
        kept, never lost or duplicated. False when every attempt raced (the log is an optimization:
        a turn missing from it is re-extracted, and adds no memory twice)."""
        log = seen
        for _ in range(attempts):
            if turn_id in log.turns:
                return True
            version = log.version
            item = {"pk": _s(memory_pk(user_id)), "sk": _s(TURNS_SK), "type": _s("memory_turns"),
                    "turns": {"L": [_s(t) for t in (*log.turns, turn_id)[-MAX_CHANGED_TURNS:]]},
                    "version": {"N": str((version or 0) + 1)}, "updated_at": _s(now_iso())}
            condition: dict[str, Any] = (
                {"ConditionExpression": "attribute_not_exists(pk)"} if version is None else
                {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": {"N": str(version)}}})
            try:
                self.client.put_item(TableName=self.table, Item=item, **condition)
                return True
            except self.client.exceptions.ConditionalCheckFailedException:
                log = self.turn_log(user_id)
        return False

    def _check_vector(self, vector: Sequence[float]) -> None:
        if len(vector) != self.settings.embedding_dimensions:
            raise ValueError(f"a vector of {len(vector)} dimensions; the index has "
                             f"{self.settings.embedding_dimensions}")


def encode_cursor(last_evaluated_key: dict[str, Any]) -> str:
    plain = {k: v["S"] for k, v in last_evaluated_key.items()}
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, user_id: str) -> dict[str, Any]:
    """The ExclusiveStartKey of a cursor, after checking it is well formed and belongs to `user_id`."""
    invalid = errors.RequestError("Invalid cursor.")
    try:
        plain = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise invalid from exc
    if (not isinstance(plain, dict) or set(plain) != {"pk", "sk"} or plain["pk"] != memory_pk(user_id)
            or not isinstance(plain["sk"], str) or not plain["sk"].startswith(MEMORY_PREFIX)):
        raise invalid
    return {k: _s(v) for k, v in plain.items()}
