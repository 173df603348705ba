"""Conversation integrity under concurrency and edits, through the chat endpoint and the history API:
a retried message is answered once, concurrent regenerates leave one answer, an edit replaces the
message and everything after it, and a conversation deleted while it streams stays deleted."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from chatcore.conversations.store import ConversationStore

SLOW = "mock/lorem?tokens=40&pace_ms=15"


def chat(base: str, user: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{base}/api/chat", headers={"x-test-user": user}, json=body, timeout=60)


def user_message(message_id: str, text: str) -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


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


def test_a_conversation_deleted_while_its_answer_streams_stays_deleted(stored_app_server: Any, user: str) -> None:
    base, store = stored_app_server()
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
