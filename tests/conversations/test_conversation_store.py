"""ConversationStore against moto's server mode: big conversations, concurrent writers, retries, deletes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from chatcore import errors
from chatcore.conversations.store import (
    FIRST_POSITION,
    ConversationMeta,
    ConversationStore,
    RecentHistory,
    StoredMessage,
    answer_position,
    conversation_pk,
    decode_cursor,
    encode_cursor,
    next_question_position,
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

    question = store.append_message(user, "c", StoredMessage(id="q1", role="user", text="first")).message
    asked, asked_at = order_key()
    store.append_message(user, "c", StoredMessage(id="a1", role="assistant", text="answer"), existing=True,
                         position=answer_position(question.position))
    answered, answered_at = order_key()
    assert answered == asked and answered_at > asked_at
    store.append_message(user, "c", StoredMessage(id="q2", role="user", text="second"))
    assert order_key()[0] > asked
    assert [c.conversation_id for c in store.list_conversations(user)[0]] == ["c"]


def _turn_of_one_question(store: ConversationStore, user: str, conversation: str, question_id: str) -> str:
    """A continued turn's writes as `DynamoMemory` makes them: the question at the position derived from
    the history read, then its answer in the slot after it. Returns the question's position."""
    history = store.load_recent(user, conversation)
    position = next_question_position(history)
    assert position is not None
    assert store.put_question(user, conversation, StoredMessage(id=question_id, role="user", text="more",
                                                                position=position)) == "stored"
    answer = StoredMessage(id=f"a-{question_id}", role="assistant", text="ok", position=answer_position(position),
                           usage={"inputTokens": 7, "outputTokens": 3})
    assert store.put_answer(user, conversation, answer, counted=2).outcome == "stored"
    return position


def test_a_continued_turn_is_three_single_item_writes(store: ConversationStore, user: str) -> None:
    """No transaction on the common path: the question is one conditional put, the answer one put and
    the metadata one update; the count and totals stay exact and the order moves to the top."""
    store.append_message(user, "c", StoredMessage(id="q0", role="user", text="first"), title="first")
    store.append_message(user, "other", StoredMessage(id="x", role="user", text="other"))
    calls: list[str] = []
    store.client.meta.events.register("before-call.dynamodb.*",
                                      lambda model, **_: calls.append(model.name), unique_id="count-turn")
    try:
        _turn_of_one_question(store, user, "c", "q1")
    finally:
        store.client.meta.events.unregister("before-call.dynamodb.*", unique_id="count-turn")
    assert calls == ["Query", "PutItem", "PutItem", "UpdateItem"]
    meta = store.get_meta(user, "c")
    assert meta is not None and meta.message_count == 3 and (meta.input_tokens, meta.output_tokens) == (7, 3)
    assert [m.id for m in store.iter_messages(user, "c")] == ["q0", "q1", "a-q1"]
    assert [c.conversation_id for c in store.list_conversations(user)[0]] == ["c", "other"]


def test_the_derived_position_catches_a_retry_and_a_concurrent_message(store: ConversationStore,
                                                                       user: str) -> None:
    """Two writers that read the same history derive the same position: the same message again is a
    `duplicate`, another message finds it `taken` (and is stored after it by the transaction)."""
    store.append_message(user, "c", StoredMessage(id="q0", role="user", text="first"))
    history = store.load_recent(user, "c")
    position = next_question_position(history)
    assert position is not None and position == next_question_position(store.load_recent(user, "c"))
    assert store.put_question(user, "c", StoredMessage(id="q1", role="user", text="x", position=position)) == "stored"
    assert store.put_question(user, "c", StoredMessage(id="q1", role="user", text="x", position=position)) == "duplicate"
    assert store.put_question(user, "c", StoredMessage(id="q2", role="user", text="y", position=position)) == "taken"
    assert [m.id for m in store.iter_messages(user, "c")] == ["q0", "q1"]


def test_an_unanswered_question_keeps_its_answer_slot(store: ConversationStore, user: str) -> None:
    """A question sent while the previous one is still being answered goes after that answer's slot,
    so the late answer still lands between them."""
    first = store.append_message(user, "c", StoredMessage(id="q0", role="user", text="first")).message
    position = next_question_position(store.load_recent(user, "c"))
    assert position is not None and position > answer_position(first.position)
    assert store.put_question(user, "c", StoredMessage(id="q1", role="user", text="x", position=position)) == "stored"
    late = StoredMessage(id="a0", role="assistant", text="late", position=answer_position(first.position))
    assert store.put_answer(user, "c", late, counted=1).outcome == "stored"
    assert [m.id for m in store.iter_messages(user, "c")] == ["q0", "a0", "q1"]


def test_one_answer_per_slot(store: ConversationStore, user: str) -> None:
    """A second answer to the same question finds the slot taken; the count is not touched by it."""
    question = store.append_message(user, "c", StoredMessage(id="q0", role="user", text="first")).message
    slot = answer_position(question.position)
    assert store.put_answer(user, "c", StoredMessage(id="a1", role="assistant", text="one",
                                                     position=slot)).outcome == "stored"
    assert store.put_answer(user, "c", StoredMessage(id="a2", role="assistant", text="two",
                                                     position=slot)).outcome == "replaced_gone"
    meta = store.get_meta(user, "c")
    assert meta is not None and meta.message_count == 2
    # The transaction replaces the slot's answer in place, on the condition that it is the one it saw.
    result = store.append_message(user, "c", StoredMessage(id="a2", role="assistant", text="two"),
                                  replaces=store.load_recent(user, "c").messages[1:], existing=True, position=slot)
    assert result.stored
    stale = store.append_message(user, "c", StoredMessage(id="a3", role="assistant", text="three"),
                                 replaces=[StoredMessage(id="a1", role="assistant", text="one", position=slot)],
                                 existing=True, position=slot)
    assert stale.outcome == "replaced_gone"
    assert [m.id for m in store.iter_messages(user, "c")] == ["q0", "a2"]
    meta = store.get_meta(user, "c")
    assert meta is not None and meta.message_count == 2


def test_an_answer_to_a_deleted_conversation_leaves_nothing(store: ConversationStore, user: str) -> None:
    question = store.append_message(user, "c", StoredMessage(id="q0", role="user", text="first")).message
    store.delete(user, "c")
    answer = StoredMessage(id="a0", role="assistant", text="late", position=answer_position(question.position))
    assert store.put_answer(user, "c", answer).outcome == "conversation_gone"
    assert list(store.iter_messages(user, "c")) == [] and store.get_meta(user, "c") is None


def test_a_conversation_without_messages_starts_at_the_first_position() -> None:
    """Two first messages of one conversation derive the same position too, whether the turn read
    nothing yet or the metadata a concurrent first turn had just created."""
    assert next_question_position(RecentHistory(meta=None)) == FIRST_POSITION
    assert next_question_position(RecentHistory(meta=ConversationMeta(conversation_id="c"))) == FIRST_POSITION
    orphan = StoredMessage(id="x", role="user", text="x", position=FIRST_POSITION)
    assert next_question_position(RecentHistory(meta=None, messages=[orphan])) == answer_position(
        answer_position(FIRST_POSITION))


def test_a_first_turn_is_five_single_item_writes(store: ConversationStore, user: str) -> None:
    """The metadata (title, list order key, no count yet), the question at the first position, the
    answer in its slot and the metadata's update: the count includes both messages at the end."""
    calls: list[str] = []
    store.client.meta.events.register("before-call.dynamodb.*",
                                      lambda model, **_: calls.append(model.name), unique_id="count-first")
    try:
        store.create_conversation(user, "new", "Hello there")
        assert store.put_question(user, "new", StoredMessage(id="q", role="user", text="Hello there",
                                                             position=FIRST_POSITION)) == "stored"
        answer = StoredMessage(id="a", role="assistant", text="hi", position=answer_position(FIRST_POSITION))
        assert store.put_answer(user, "new", answer, counted=2, move_order=False).stored
    finally:
        store.client.meta.events.unregister("before-call.dynamodb.*", unique_id="count-first")
    assert calls == ["UpdateItem", "PutItem", "PutItem", "UpdateItem"]
    meta = store.get_meta(user, "new")
    assert meta is not None and (meta.title, meta.message_count) == ("Hello there", 2)
    assert [c.conversation_id for c in store.list_conversations(user)[0]] == ["new"]
