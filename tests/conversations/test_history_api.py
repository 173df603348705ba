"""The history API over HTTP: pagination, restore as UIMessages, rename, delete, and user isolation."""

from __future__ import annotations

from typing import Any

import httpx
from chatcore.conversations.store import ConversationStore, StoredMessage


def api(base: str, user: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{base}/api/conversations{path}", headers={"x-test-user": user}, timeout=60,
                         **kwargs)


def seed(store: ConversationStore, user: str, conversation: str, texts: list[str]) -> None:
    for n, text in enumerate(texts):
        role = "user" if n % 2 == 0 else "assistant"
        store.append_message(user, conversation, StoredMessage(id=f"{conversation}-{n}", role=role, text=text),  # type: ignore[arg-type]
                             title=texts[0] if n == 0 else None)


def test_list_is_newest_first_and_paginates_with_a_cursor(stored_app_server: Any, user: str) -> None:
    base, store = stored_app_server()
    for n in range(5):
        seed(store, user, f"conv{n}", [f"question {n}"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = api(base, user, "GET", "", params=params).json()
        seen += [c["id"] for c in body["conversations"]]
        pages += 1
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert seen == [f"conv{n}" for n in reversed(range(5))] and pages == 3
    first = api(base, user, "GET", "", params={"limit": 1}).json()["conversations"][0]
    assert first["title"] == "question 4" and first["messageCount"] == 1
    assert api(base, user, "GET", "", params={"cursor": "tampered"}).status_code == 400
    assert api(base, user, "GET", "", params={"limit": 0}).status_code == 400


def test_a_conversation_restores_as_ui_messages(stored_app_server: Any, user: str) -> None:
    base, _ = stored_app_server()
    assert httpx.post(f"{base}/api/chat", headers={"x-test-user": user}, timeout=60, json={
        "id": "talk", "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hello there"}]}],
    }).status_code == 200
    body = api(base, user, "GET", "/talk").json()
    assert body["id"] == "talk" and body["title"] == "Hello there"
    user_message, answer = body["messages"]
    assert user_message == {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hello there"}],
                            "metadata": {"status": "complete", "createdAt": user_message["metadata"]["createdAt"]}}
    assert answer["role"] == "assistant" and answer["parts"] == [{"type": "text", "text": "You said: Hello there"}]
    assert answer["metadata"]["model"] == "mock/echo" and answer["metadata"]["status"] == "complete"
    assert answer["metadata"]["usage"]["outputTokens"] == 4


def test_rename_validates_the_title(stored_app_server: Any, user: str) -> None:
    base, store = stored_app_server()
    seed(store, user, "named", ["hi"])
    assert api(base, user, "PATCH", "/named", json={"title": "  Trip   plans "}).json()["title"] == "Trip plans"
    assert store.get_meta(user, "named").title == "Trip plans"  # type: ignore[union-attr]
    family = "Family trip \U0001f468\u200d\U0001f469\u200d\U0001f467"  # emoji joined by ZWJ (a format character)
    assert api(base, user, "PATCH", "/named", json={"title": family}).json()["title"] == family
    for bad in ({"title": ""}, {"title": "   "}, {"title": "x" * 201}, {"title": "a\x00b"}, {"title": 3},
                {"title": "ok", "extra": 1}, {}):
        assert api(base, user, "PATCH", "/named", json=bad).status_code == 400, bad
    assert api(base, user, "PATCH", "/missing", json={"title": "x"}).status_code == 404


def test_delete_removes_the_conversation_and_its_messages(stored_app_server: Any, user: str) -> None:
    base, store = stored_app_server()
    seed(store, user, "gone", [f"m{n}" for n in range(30)])
    assert api(base, user, "DELETE", "/gone").status_code == 204
    assert api(base, user, "GET", "/gone").status_code == 404
    assert list(store.iter_messages(user, "gone")) == []
    assert api(base, user, "DELETE", "/gone").status_code == 404


def test_one_user_can_neither_read_list_change_nor_delete_anothers(stored_app_server: Any) -> None:
    base, store = stored_app_server()
    seed(store, "alice", "secret", ["alice's plans", "noted"])
    cursor_probe = api(base, "alice", "GET", "", params={"limit": 1}).json()
    assert [c["id"] for c in cursor_probe["conversations"]] == ["secret"]

    assert api(base, "bob", "GET", "").json() == {"conversations": [], "nextCursor": None}
    assert api(base, "bob", "GET", "/secret").status_code == 404
    assert api(base, "bob", "PATCH", "/secret", json={"title": "mine"}).status_code == 404
    assert api(base, "bob", "DELETE", "/secret").status_code == 404
    # Chatting with the same id starts bob's own conversation; alice's history is untouched.
    reply = httpx.post(f"{base}/api/chat", headers={"x-test-user": "bob"}, timeout=60, json={
        "id": "secret", "messages": [{"id": "b1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]})
    assert reply.status_code == 200 and "alice" not in reply.text
    alice = api(base, "alice", "GET", "/secret").json()
    assert alice["title"] == "alice's plans" and [m["id"] for m in alice["messages"]] == ["secret-0", "secret-1"]
    bob = api(base, "bob", "GET", "/secret").json()
    assert [m["role"] for m in bob["messages"]] == ["user", "assistant"] and bob["title"] == "hi"
    # Alice's cursor is refused for bob.
    seed(store, "alice", "second", ["more"])
    alice_cursor = api(base, "alice", "GET", "", params={"limit": 1}).json()["nextCursor"]
    assert alice_cursor and api(base, "bob", "GET", "", params={"cursor": alice_cursor}).status_code == 400
    # No credential at all is a 401.
    assert httpx.get(f"{base}/api/conversations", timeout=60).status_code == 401
