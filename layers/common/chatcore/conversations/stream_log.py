"""`StreamLog`: the encoded chunks of answers being generated, in DynamoDB, so another invocation can
replay and follow them (`GET /api/chat/{id}/stream`) or stop them (`POST /api/chat/{id}/stop`).

Items live in the conversation's partition (the user is in the key, as for every conversation item):

- `sk = L#<16-digit start microseconds>#<message id>#<6-digit seq>`: one batch of UI message stream
  bytes (each run of deltas merged into one, then zlib-compressed: attribute `z`; a 2 s batch stays
  under 1 KB, one write unit, even at 150 tokens/s), written in order by the generating invocation;
  the last one has `end = true`. The start time in the key makes one descending Query (`Limit 1`) find the newest
  answer's latest batch: no separate pointer item to write or clean up.
- a stop marker: an item at the next free `seq` with `stop = true`, written by a stop request. The
  generator learns of it, whichever invocation it runs in, when its own conditional write of that
  `seq` fails (batches are written every `STREAM_FLUSH_MS`, 2 s by default) or, between writes,
  from `stop_requested`: one consistent read of that key once a second has passed since it last
  called DynamoDB. So a stop is noticed within about 1 s; the generator writes its last batch
  after the marker.

A follower whose log stopped growing asks `answer_stored` whether the answer was stored anyway (its
last batch failed to be written even after retries): one consistent descending Query returns the
metadata's `updated_at` and the ids of the newest messages, where a stored answer is.

`L#` sorts after `I#` and before `M#` and `META`, so the chat turn's read (`sk >= "M#"`) and the
history API (`M#` … `M#~`) never see these items; deleting a conversation deletes them too. Every
item expires by TTL (`expires_at`, one hour after the answer's deadline) and counts against no
limit or total.

All calls are blocking boto3 calls: async callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chatcore.conversations.store import MESSAGE_PREFIX, META_SK, conversation_pk
from chatcore.dynamodb import client_for, is_condition_failure
from chatcore.settings import Settings

LOG_PREFIX = "L#"
EXPIRY_AFTER_DEADLINE_S = 3600
_STOP_ATTEMPTS = 10
ANSWER_LOOKBACK = 8  # newest messages searched for a stored answer (a message sent meanwhile may follow it)


@dataclass(frozen=True, slots=True)
class LogBatch:
    """One item of an answer's log."""

    seq: int
    data: bytes  # UI message stream bytes (empty for a stop marker)
    end: bool = False  # the answer's last batch (it ends with `[DONE]`)
    stop: bool = False  # a stop marker written by a stop request


@dataclass(frozen=True, slots=True)
class LoggedAnswer:
    """The newest answer logged in a conversation, as its latest item describes it."""

    prefix: str  # the sort-key prefix of its items: `L#<start>#<message id>#`
    message_id: str
    last: LogBatch
    deadline: float  # epoch seconds after which nobody writes it any more

    @property
    def started_us(self) -> int:
        """When the answer started (epoch microseconds, from its key)."""
        return int(self.prefix.split("#")[1])

    @property
    def streaming(self) -> bool:
        """Still being written: not ended, and its deadline not passed (a crashed writer ends nothing)."""
        return not self.last.end and time.time() < self.deadline


def new_prefix(message_id: str) -> str:
    """The sort-key prefix of a new answer's items."""
    return f"{LOG_PREFIX}{time.time_ns() // 1000:016d}#{message_id}#"


def _sk(prefix: str, seq: int) -> str:
    return f"{prefix}{seq:06d}"


class StreamLog:
    """Append, find, read and stop logged answers (see the module docstring for the items)."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        self.settings = settings
        self.table = settings.table_name
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client_for(self.settings)
        return self._client

    def append(self, user_id: str, conversation_id: str, prefix: str, seq: int, data: bytes, *,
               end: bool, deadline: float) -> bool:
        """Write batch `seq`; False when a stop marker already holds that `seq` (the answer must stop)."""
        item: dict[str, Any] = {
            "pk": {"S": conversation_pk(user_id, conversation_id)}, "sk": {"S": _sk(prefix, seq)},
            "type": {"S": "stream"}, "z": {"B": zlib.compress(data, 6)},
            "deadline": {"N": str(int(deadline))},
            "expires_at": {"N": str(int(deadline) + EXPIRY_AFTER_DEADLINE_S)},
        }
        if end:
            item["end"] = {"BOOL": True}
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except Exception as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def stop_requested(self, user_id: str, conversation_id: str, prefix: str, seq: int) -> bool:
        """Whether a stop marker holds batch `seq` (the generator's next): one consistent GetItem.

        Only a stop request writes a `seq` its generator has not written yet, so the key alone says it.
        """
        response = self.client.get_item(
            TableName=self.table, ConsistentRead=True, ProjectionExpression="pk",
            Key={"pk": {"S": conversation_pk(user_id, conversation_id)}, "sk": {"S": _sk(prefix, seq)}})
        return "Item" in response

    def latest(self, user_id: str, conversation_id: str) -> LoggedAnswer | None:
        """The newest logged answer of the conversation (ended or not), or None."""
        response = self.client.query(
            TableName=self.table, KeyConditionExpression="pk = :pk AND begins_with(sk, :l)",
            ExpressionAttributeValues={":pk": {"S": conversation_pk(user_id, conversation_id)},
                                       ":l": {"S": LOG_PREFIX}},
            ScanIndexForward=False, ConsistentRead=True, Limit=1,
        )
        items = response.get("Items", [])
        if not items:
            return None
        item = items[0]
        sk = item["sk"]["S"]
        prefix, _, seq = sk.rpartition("#")  # prefix: L#<start>#<message id>
        message_id = prefix.split("#", 2)[2]
        return LoggedAnswer(prefix=prefix + "#", message_id=message_id, last=_batch(item, int(seq)),
                            deadline=float(item["deadline"]["N"]))

    def read(self, user_id: str, conversation_id: str, prefix: str, from_seq: int) -> list[LogBatch]:
        """The answer's batches from `from_seq` on, in order (one page: plenty for one poll)."""
        response = self.client.query(
            TableName=self.table, KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={":pk": {"S": conversation_pk(user_id, conversation_id)},
                                       ":lo": {"S": _sk(prefix, from_seq)}, ":hi": {"S": prefix + "~"}},
            ConsistentRead=True,
        )
        return [_batch(item, int(item["sk"]["S"].rpartition("#")[2])) for item in response.get("Items", [])]

    def request_stop(self, user_id: str, conversation_id: str) -> LoggedAnswer | None:
        """Put a stop marker after the newest answer's latest batch; None when nothing is streaming."""
        pk = conversation_pk(user_id, conversation_id)
        for _ in range(_STOP_ATTEMPTS):
            answer = self.latest(user_id, conversation_id)
            if answer is None or not answer.streaming:
                return None
            if answer.last.stop:
                return answer  # already asked
            item = {
                "pk": {"S": pk}, "sk": {"S": _sk(answer.prefix, answer.last.seq + 1)}, "type": {"S": "stream"},
                "stop": {"BOOL": True}, "deadline": {"N": str(int(answer.deadline))},
                "expires_at": {"N": str(int(answer.deadline) + EXPIRY_AFTER_DEADLINE_S)},
            }
            try:
                self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)")
            except Exception as exc:
                if is_condition_failure(exc):
                    continue  # the generator wrote that seq meanwhile: look again
                raise
            return answer
        return None

    def answer_stored(self, user_id: str, conversation_id: str, answer: LoggedAnswer) -> bool:
        """Whether the logged answer's message is stored in the conversation (its generator finished
        it even if its last batch never reached the log): one consistent descending Query that returns
        the metadata and the newest messages (an answer is stored last in its turn, so it is among
        them). The metadata must have changed since the answer started, because a continued turn (a
        client tool's output, an approval) updates a message stored before, under the same id."""
        response = self.client.query(
            TableName=self.table, KeyConditionExpression="pk = :pk AND sk >= :m", ScanIndexForward=False,
            ConsistentRead=True, Limit=1 + ANSWER_LOOKBACK, ProjectionExpression="sk, id, updated_at",
            ExpressionAttributeValues={":pk": {"S": conversation_pk(user_id, conversation_id)},
                                       ":m": {"S": MESSAGE_PREFIX}})
        items = response.get("Items", [])
        meta = next((item for item in items if item["sk"]["S"] == META_SK), None)
        if meta is None or not any(item.get("id", {}).get("S") == answer.message_id for item in items):
            return False
        return str(meta.get("updated_at", {}).get("S", "")) >= _iso(answer.started_us)

    def conversation_exists(self, user_id: str, conversation_id: str) -> bool:
        """Whether the caller has this conversation (its metadata item)."""
        response = self.client.get_item(
            TableName=self.table, ConsistentRead=True, ProjectionExpression="pk",
            Key={"pk": {"S": conversation_pk(user_id, conversation_id)}, "sk": {"S": META_SK}})
        return "Item" in response


def _iso(epoch_us: int) -> str:
    """Epoch microseconds in the stored times' format (`store.now_iso`), which sorts as it reads."""
    return datetime.fromtimestamp(epoch_us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _batch(item: dict[str, Any], seq: int) -> LogBatch:
    raw = item.get("z", {}).get("B")
    return LogBatch(seq=seq, data=zlib.decompress(raw) if raw else b"",
                    end=bool(item.get("end", {}).get("BOOL", False)), stop=bool(item.get("stop", {}).get("BOOL", False)))
