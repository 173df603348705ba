"""ConversationStore against moto's server mode: big conversations, concurrent writers, retries, deletes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from chatcore import errors
from chatcore.conversations.store import (
    ConversationStore,
    StoredMessage,
    conversation_pk,
    decode_cursor,
    encode_cursor,
)
from chatcore.messages import Message
from chatcore.prompt import fit_prompt
from chatcore.tokens import estimate_messages_tokens


def _message(i: int, role: str | None = None) -> StoredMessage:
    role = role or ("user" if i % 2 == 0 else "assistant")
    return StoredMessage(id=f"m{i:05d}", role=role, text=f"message {i} " + "lorem ipsum " * (i % 7))  # type: ignore[arg-type]


def _partition(dynamodb: Any, table: str, user: str, conversation: str) -> list[str]:
    keys: list[str] = []
    request: dict[str, Any] = {"TableName": table, "KeyConditionExpression": "pk = :pk",
                               "ExpressionAttributeValues": {":pk": {"S": conversation_pk(user, conversation)}}}
    while True:
        response = dynamodb.query(**request)
        keys += [item["sk"]["S"] for item in response["Items"]]
        if "LastEvaluatedKey" not in response:
            return keys
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def test_a_thousand_message_conversation_round_trips_and_fits_a_window(store: ConversationStore, user: str) -> None:
    # 999 bulk-loaded (moto copies the whole table on every transaction), the last one appended.
    store.import_messages(user, "long", [_message(i) for i in range(999)], title="Long one")
    assert store.append_message(user, "long", _message(999), title="ignored: the title exists").stored

    messages = list(store.iter_messages(user, "long"))
    assert [m.id for m in messages] == [f"m{i:05d}" for i in range(1000)]
    assert [m.text for m in messages] == [_message(i).text for i in range(1000)]
    meta = store.get_meta(user, "long")
    assert meta is not None and meta.message_count == 1000 and meta.title == "Long one"

    history = store.load_recent(user, "long", page_size=100)
    assert history.complete and [m.id for m in history.messages] == [m.id for m in messages]
    assert history.round_trips == 11  # 1,000 messages + META in pages of 100

    as_prompt = [Message(role=m.role, content=m.text) for m in history.messages]
    fitted = fit_prompt(as_prompt, "Be brief.", "Earlier: greetings.", context_window=4_000, max_output_tokens=1_000)
    budget = int(4_000 * 0.95) - 1_000
    assert estimate_messages_tokens(fitted.messages, fitted.system) <= budget
    assert fitted.estimated_input_tokens == estimate_messages_tokens(fitted.messages, fitted.system)
    assert 0 < len(fitted.messages) < 1000 and fitted.dropped_messages == 1000 - len(fitted.messages)
    assert list(fitted.messages) == as_prompt[-len(fitted.messages):]  # the most recent ones, in order
    assert fitted.messages[0].role == "user" and fitted.summary_included

    # A bound on the read (HISTORY_MAX_CHARS) stops early and says so.
    partial = store.load_recent(user, "long", max_chars=500)
    assert not partial.complete and partial.messages[-1].id == "m00999" and len(partial.messages) < 1000


def test_concurrent_appends_lose_nothing_and_keep_each_writers_order(store: ConversationStore, user: str) -> None:
    writers, per_writer = 8, 15
    barrier = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write(w: int) -> None:
        try:
            barrier.wait()
            for i in range(per_writer):
                msg = StoredMessage(id=f"w{w}-{i:03d}", role="user", text=f"writer {w} message {i}")
                store.append_message(user, "busy", msg)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures

    ids = [m.id for m in store.iter_messages(user, "busy")]
    assert sorted(ids) == sorted(f"w{w}-{i:03d}" for w in range(writers) for i in range(per_writer))
    for w in range(writers):
        mine = [i for i in ids if i.startswith(f"w{w}-")]
        assert mine == sorted(mine)  # each writer's messages in the order it wrote them
    meta = store.get_meta(user, "busy")
    assert meta is not None and meta.message_count == writers * per_writer  # no lost counter update


def test_a_retried_message_id_is_stored_once(store: ConversationStore, user: str) -> None:
    first = store.append_message(user, "retry", StoredMessage(id="u1", role="user", text="hello"))
    again = store.append_message(user, "retry", StoredMessage(id="u1", role="user", text="hello"))
    assert first.stored and not again.stored
    assert [m.id for m in store.iter_messages(user, "retry")] == ["u1"]
    meta = store.get_meta(user, "retry")
    assert meta is not None and meta.message_count == 1 and meta.version == 1


def test_replacing_an_answer_deletes_the_old_one(store: ConversationStore, user: str) -> None:
    store.append_message(user, "regen", StoredMessage(id="u1", role="user", text="q"))
    old = store.append_message(user, "regen", StoredMessage(id="a1", role="assistant", text="first")).message
    store.append_message(user, "regen", StoredMessage(id="a2", role="assistant", text="second"), replaces=[old])
    assert [(m.id, m.text) for m in store.iter_messages(user, "regen")] == [("u1", "q"), ("a2", "second")]
    meta = store.get_meta(user, "regen")
    assert meta is not None and meta.message_count == 2


def test_delete_removes_every_item_of_the_conversation_only(store: ConversationStore, user: str, dynamodb: Any) -> None:
    for i in range(60):  # more than two BatchWriteItem batches of 25 (messages + id markers + meta)
        store.append_message(user, "doomed", _message(i))
    store.append_message(user, "kept", _message(0))
    deleted = store.delete(user, "doomed")
    assert deleted == 121
    assert _partition(dynamodb, store.table, user, "doomed") == []
    assert store.get_meta(user, "doomed") is None
    assert [m.id for m in store.iter_messages(user, "kept")] == ["m00000"]


def test_items_carry_the_ttl(store: ConversationStore, user: str, dynamodb: Any) -> None:
    store.append_message(user, "ttl", _message(0))
    items = dynamodb.query(TableName=store.table, KeyConditionExpression="pk = :pk",
                           ExpressionAttributeValues={":pk": {"S": conversation_pk(user, "ttl")}})["Items"]
    assert len(items) == 3  # META, the message and its id marker
    for item in items:
        expires = int(item["expires_at"]["N"])
        assert 29 * 86_400 < expires - time.time() <= 30 * 86_400


def test_cursors_are_checked_against_their_owner(store: ConversationStore, user: str) -> None:
    for n in range(3):
        store.append_message(user, f"c{n}", _message(0))
    page, cursor = store.list_conversations(user, limit=2)
    assert len(page) == 2 and cursor
    assert decode_cursor(cursor, user)["gsi1pk"]["S"].startswith(f"USER#{user}#")
    with pytest.raises(errors.RequestError):
        decode_cursor(cursor, "someone-else")
    forged = encode_cursor({"pk": {"S": "USER#x#CONV#y"}, "sk": {"S": "META"}, "gsi1pk": {"S": f"USER#{user}#CONVS"},
                            "gsi1sk": {"S": "z"}})
    with pytest.raises(errors.RequestError):
        decode_cursor(forged, user)
    for garbage in ("%%%", "e30", "bm90IGpzb24"):
        with pytest.raises(errors.RequestError):
            decode_cursor(garbage, user)


def test_the_list_order_moves_with_questions_not_answers(store: ConversationStore, user: str) -> None:
    """An answer's metadata update keeps the index key (one index write instead of a delete and a
    put); the next question moves the conversation to the top as before."""
    def order_key() -> tuple[str, str]:
        item = store.client.get_item(TableName=store.table, ConsistentRead=True,
                                     Key={"pk": {"S": conversation_pk(user, "c")}, "sk": {"S": "META"}})["Item"]
        return item["gsi1sk"]["S"], item["updated_at"]["S"]

    store.append_message(user, "c", StoredMessage(id="q1", role="user", text="first"))
    asked, asked_at = order_key()
    store.append_message(user, "c", StoredMessage(id="a1", role="assistant", text="answer"), existing=True,
                         answers="q1")
    answered, answered_at = order_key()
    assert answered == asked and answered_at > asked_at
    store.append_message(user, "c", StoredMessage(id="q2", role="user", text="second"))
    assert order_key()[0] > asked
    assert [c.conversation_id for c in store.list_conversations(user)[0]] == ["c"]
