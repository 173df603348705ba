"""Conversation integrity under concurrency and edits, through the chat endpoint and the history API:
a retried message is answered once, concurrent regenerates leave one answer, an edit replaces the
message and everything after it, and a conversation deleted while it streams stays deleted."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from chatcore.conversations.store import ConversationStore

SLOW = "mock/lorem?tokens=40&pace_ms=15"


def chat(base: str, user: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{base}/api/chat", headers={"x-test-user": user}, json=body, timeout=60)


def user_message(message_id: str, text: str) -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


def started(base: str, user: str, conversation: str) -> None:
    assert chat(base, user, id=conversation, messages=[user_message("u0", "first")]).status_code == 200


def stored(store: ConversationStore, user: str, conversation: str) -> list[Any]:
    return list(store.iter_messages(user, conversation))


def concurrently(*calls: Any) -> list[httpx.Response]:
    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index: int) -> None:
        barrier.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def test_an_edit_replaces_the_message_and_everything_after_it(stored_app_server: Any, user: str) -> None:
    base, store = stored_app_server()
    assert chat(base, user, id="edit", messages=[user_message("u1", "first question")]).status_code == 200
    assert chat(base, user, id="edit", messages=[user_message("u1", "first question"), {
        "id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "x"}]}, user_message("u2", "second")]
                ).status_code == 200
    assert len(stored(store, user, "edit")) == 4
    # useChat's edit of the first message: the same id with new text, messageId set, later messages dropped.
    edited = chat(base, user, id="edit", messageId="u1", messages=[user_message("u1", "the edited question")])
    assert edited.status_code == 200
    messages = stored(store, user, "edit")
    assert [(m.role, m.text) for m in messages] == [("user", "the edited question"),
                                                    ("assistant", "You said: the edited question")]
    meta = store.get_meta(user, "edit")
    assert meta is not None and meta.message_count == 2


def test_a_retried_message_is_answered_once(stored_app_server: Any, user: str) -> None:
    base, store = stored_app_server()
    body = {"id": "retry", "model": SLOW, "messages": [user_message("u1", "hello")]}
    first, second = concurrently(lambda: chat(base, user, **body), lambda: chat(base, user, **body))
    # Depending on which write lands first the retry is refused (409: the message is being answered)
    # or answers it again, replacing the other answer; either way one answer is stored.
    statuses = sorted(r.status_code for r in (first, second))
    assert statuses in ([200, 200], [200, 409]), statuses
    if statuses == [200, 409]:
        conflict = first if first.status_code == 409 else second
        assert conflict.json()["error"]["code"] == "conflict"
    messages = stored(store, user, "retry")
    assert [m.role for m in messages] == ["user", "assistant"]
    meta = store.get_meta(user, "retry")
    assert meta is not None and meta.message_count == len(messages) == 2


def test_concurrent_regenerates_leave_one_answer(stored_app_server: Any, user: str) -> None:
    base, store = stored_app_server()
    assert chat(base, user, id="regen", messages=[user_message("u1", "hello")]).status_code == 200
    body = {"id": "regen", "model": SLOW, "trigger": "regenerate-message", "messages": [user_message("u1", "hello")]}
    responses = concurrently(lambda: chat(base, user, **body), lambda: chat(base, user, **body))
    assert all(r.status_code == 200 for r in responses)
    messages = stored(store, user, "regen")
    assert [m.role for m in messages] == ["user", "assistant"]
    meta = store.get_meta(user, "regen")
    assert meta is not None and meta.message_count == 2


@pytest.mark.parametrize("continued", [False, True], ids=["first turn", "continued"])
def test_a_conversation_deleted_while_its_answer_streams_stays_deleted(stored_app_server: Any, user: str,
                                                                       continued: bool) -> None:
    """The first turn and a continued one store their question by different writes; neither brings
    the conversation back."""
    base, store = stored_app_server()
    if continued:
        started(base, user, "gone")
    headers = {"x-test-user": user}
    body = {"id": "gone", "model": "mock/lorem?tokens=60&pace_ms=20", "messages": [user_message("u1", "hello")]}
    with httpx.Client(timeout=60) as client, client.stream("POST", f"{base}/api/chat", headers=headers,
                                                           json=body) as response:
        lines = response.iter_lines()
        for line in lines:
            if '"text-delta"' in line:
                break
        assert client.delete(f"{base}/api/conversations/gone", headers=headers).status_code == 204
        assert any("[DONE]" in line for line in lines)  # the answer streams to its end
    assert client_get(base, user, "/gone").status_code == 404
    assert store.get_meta(user, "gone") is None and stored(store, user, "gone") == []


def client_get(base: str, user: str, path: str) -> httpx.Response:
    return httpx.get(f"{base}/api/conversations{path}", headers={"x-test-user": user}, timeout=60)


# --- the same guarantees on a continued conversation, whose turns take the single-item path
# (`put_question` at the position derived from the history read, `put_answer` in its slot) ---


def test_a_retried_message_in_a_continued_conversation_is_answered_once(stored_app_server: Any, user: str) -> None:
    base, store = stored_app_server()
    started(base, user, "retry2")
    body = {"id": "retry2", "model": SLOW, "messages": [user_message("u1", "hello")]}
    first, second = concurrently(lambda: chat(base, user, **body), lambda: chat(base, user, **body))
    statuses = sorted(r.status_code for r in (first, second))
    assert statuses in ([200, 200], [200, 409]), statuses
    messages = stored(store, user, "retry2")
    assert [(m.role, m.id) for m in messages][2:3] == [("user", "u1")]
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    meta = store.get_meta(user, "retry2")
    assert meta is not None and meta.message_count == 4


def test_concurrent_messages_from_two_tabs_are_both_kept_in_order(stored_app_server: Any, user: str) -> None:
    """Two different messages that read the same history derive the same position: one takes it, the
    other is stored after it (by the transaction) and each gets its own answer."""
    base, store = stored_app_server()
    started(base, user, "tabs")
    responses = concurrently(
        lambda: chat(base, user, id="tabs", model=SLOW, messages=[user_message("t1", "from tab one")]),
        lambda: chat(base, user, id="tabs", model=SLOW, messages=[user_message("t2", "from tab two")]))
    assert [r.status_code for r in responses] == [200, 200]
    messages = stored(store, user, "tabs")
    assert sorted(m.id for m in messages if m.role == "user") == ["t1", "t2", "u0"]
    assert sum(m.role == "assistant" for m in messages) == 3
    positions = [m.position for m in messages]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    meta = store.get_meta(user, "tabs")
    assert meta is not None and meta.message_count == len(messages) == 6


def test_concurrent_regenerates_in_a_continued_conversation_leave_one_answer(stored_app_server: Any,
                                                                            user: str) -> None:
    base, store = stored_app_server()
    started(base, user, "regen2")
    assert chat(base, user, id="regen2", messages=[user_message("u1", "hello")]).status_code == 200
    body = {"id": "regen2", "model": SLOW, "trigger": "regenerate-message",
            "messages": [user_message("u1", "hello")]}
    responses = concurrently(lambda: chat(base, user, **body), lambda: chat(base, user, **body))
    assert all(r.status_code == 200 for r in responses)
    messages = stored(store, user, "regen2")
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    meta = store.get_meta(user, "regen2")
    assert meta is not None and meta.message_count == 4


def _memory_turn(store: ConversationStore, user: str, conversation: str, message_id: str) -> Any:
    """A turn begun (its history read) but not recorded yet, as the chat service holds it."""
    import asyncio

    from chatcore.conversations.memory import DynamoMemory
    from chatcore.messages import ChatMessage, ChatRequest

    request = ChatRequest(messages=(ChatMessage(role="user", text="late", id=message_id),),
                          conversation_id=conversation)
    return asyncio.run(DynamoMemory(store.settings, store).begin(user, request, None))


def _record(turn: Any) -> list[Any]:
    import asyncio

    from chatcore.events import Finish, Start, TextDelta

    async def events() -> Any:
        yield Start(message_id=turn.message_id, provider="mock", model="echo")
        yield TextDelta(text="answer")
        yield Finish(reason="stop")

    async def run() -> list[Any]:
        return [event async for event in turn.record(events())]

    return asyncio.run(run())


def test_a_question_whose_position_was_taken_is_stored_after_the_other(store: ConversationStore, user: str) -> None:
    """Deterministic form of the two-tabs race: another message lands at the derived position between
    this turn's read and its write; this one goes after it, with its own answer after it."""
    from chatcore.conversations.store import StoredMessage

    store.append_message(user, "taken", StoredMessage(id="u0", role="user", text="first"))
    turn = _memory_turn(store, user, "taken", "late")
    assert turn.fast_question
    assert store.put_question(user, "taken", StoredMessage(id="other", role="user", text="other tab",
                                                           position=turn.question_position)) == "stored"
    _record(turn)
    messages = stored(store, user, "taken")
    assert [m.id for m in messages][:3] == ["u0", "other", "late"]
    assert messages[3].role == "assistant" and messages[3].position > messages[2].position
    meta = store.get_meta(user, "taken")
    # "other" was stored by hand with no answer, so it is not counted; the turn's question and answer are.
    assert meta is not None and meta.message_count == 3


def test_a_retry_that_finds_its_own_message_at_the_position_is_a_conflict(store: ConversationStore,
                                                                         user: str) -> None:
    from chatcore import errors
    from chatcore.conversations.store import StoredMessage

    store.append_message(user, "dup", StoredMessage(id="u0", role="user", text="first"))
    turn = _memory_turn(store, user, "dup", "same")
    assert store.put_question(user, "dup", StoredMessage(id="same", role="user", text="late",
                                                         position=turn.question_position)) == "stored"
    with pytest.raises(errors.ConflictError):
        _record(turn)
    assert [m.id for m in stored(store, user, "dup")] == ["u0", "same"]


def test_a_retry_that_reads_the_metadata_its_first_attempt_just_created_is_a_conflict(
        store: ConversationStore, user: str) -> None:
    """A new conversation: the first attempt has created the metadata but not stored its question yet
    when the retry reads. The retry derives the same first position, so it is refused, not stored twice."""
    from chatcore import errors
    from chatcore.conversations.store import FIRST_POSITION

    first = _memory_turn(store, user, "race", "same")
    store.create_conversation(user, "race", "late")  # the first attempt, half way
    retry = _memory_turn(store, user, "race", "same")
    assert retry.fast_question and retry.question_position == FIRST_POSITION == first.question_position
    _record(first)
    with pytest.raises(errors.ConflictError):
        _record(retry)
    assert [m.id for m in stored(store, user, "race")] == ["same", first.message_id]
    meta = store.get_meta(user, "race")
    assert meta is not None and meta.message_count == 2
