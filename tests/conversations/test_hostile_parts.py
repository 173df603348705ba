"""Hostile parts: nesting depth and size are bounded at parse time, and a stored item that cannot be
rendered never turns a read of the conversation into a 500."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from chatcore.conversations.store import conversation_pk


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


def chat(base: str, user: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base}/api/chat", headers={"x-test-user": user}, json=body, timeout=60)


def read(base: str, user: str, conversation: str) -> httpx.Response:
    return httpx.get(f"{base}/api/conversations/{conversation}", headers={"x-test-user": user}, timeout=60)


def user_message(message_id: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": "hello"}, *parts]}


def test_a_deeply_nested_data_part_is_refused_and_the_conversation_stays_readable(
        stored_app_server: Any, user: str) -> None:
    base, _ = stored_app_server()
    assert chat(base, user, {"id": "deep", "messages": [user_message("u1")]}).status_code == 200
    deep = chat(base, user, {"id": "deep", "messages": [
        user_message("u1"), {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "hi"}]},
        user_message("u2", {"type": "data-weather", "data": nested(900)})]})
    assert deep.status_code == 400
    assert "depth" in deep.json()["error"]["message"]
    conversation = read(base, user, "deep")
    assert conversation.status_code == 200
    messages = conversation.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]  # the refused turn stored nothing
    assert messages[0]["id"] == "u1"


def test_deep_json_is_refused_wherever_the_caller_puts_it(stored_app_server: Any, user: str) -> None:
    base, _ = stored_app_server()
    cases: dict[str, dict[str, Any]] = {
        "part-extra-field": {"messages": [user_message("u1", {"type": "data-x", "extra": nested(100)})]},
        "message-metadata": {"messages": [{**user_message("u1"), "metadata": nested(100)}]},
        "provider-options": {"messages": [user_message("u1")], "providerOptions": {"openai": nested(100)}},
        "tool-input-schema": {"messages": [user_message("u1")],
                              "tools": {"t": {"description": "d", "inputSchema": nested(100)}}},
        "tool-part-input": {"messages": [user_message("u1"), {"id": "a1", "role": "assistant", "parts": [
            {"type": "tool-t", "toolCallId": "c1", "state": "output-available", "input": nested(100),
             "output": "ok"}]}, user_message("u2")]},
        "tool-part-output": {"messages": [user_message("u1"), {"id": "a1", "role": "assistant", "parts": [
            {"type": "tool-t", "toolCallId": "c1", "state": "output-available", "input": {},
             "output": nested(100)}]}, user_message("u2")]},
    }
    for name, body in cases.items():
        response = chat(base, user, {"id": f"c-{name}", **body})
        assert response.status_code == 400, (name, response.status_code, response.text[:300])
        assert response.json()["error"]["code"] in ("invalid_request", "bad_request"), response.text[:300]
        assert read(base, user, f"c-{name}").status_code == 404, name  # nothing was stored
    # Ordinary nesting is fine.
    ok = chat(base, user, {"id": "shallow", "messages": [user_message("u1", {"type": "data-x", "data": nested(10)})]})
    assert ok.status_code == 200


def test_an_oversized_part_is_a_413_before_anything_is_stored(stored_app_server: Any, chat_server: Any,
                                                               user: str) -> None:
    stored_base, _ = stored_app_server(max_stored_message_bytes=50_000)
    stateless_base = chat_server(max_stored_message_bytes=50_000)
    big = {"type": "data-blob", "data": "x" * 60_000}
    for base in (stored_base, stateless_base):
        response = chat(base, user, {"id": "big", "messages": [user_message("u1", big)]})
        assert response.status_code == 413, response.text[:300]
        error = response.json()["error"]
        assert error["code"] == "payload_too_large" and "Part 1 of message 0" in error["message"], error
    assert read(stored_base, user, "big").status_code == 404
    # Parts that fit one by one but not together: the message is refused.
    halves = [{"type": "data-blob", "data": "x" * 30_000}, {"type": "data-blob", "data": "y" * 30_000}]
    response = chat(stateless_base, user, {"messages": [user_message("u1", *halves)]})
    assert response.status_code == 413 and "Message 0" in response.json()["error"]["message"]
    assert chat(stored_base, user, {"id": "fits", "messages": [user_message("u1", halves[0])]}).status_code == 200


BAD_ITEMS: dict[str, dict[str, Any]] = {
    # What a 900-level data part accepted by an earlier version left in the table.
    "deep-part": {"parts_json": {"S": json.dumps([{"type": "text", "text": "t"},
                                                  {"type": "data-x", "data": nested(900)}])}},
    "deep-array": {"parts_json": {"S": json.dumps(nested(900))}},
    "garbled": {"parts_json": {"S": "{not json"}},
    "not-parts": {"parts_json": {"S": json.dumps([7, "x", None, {"no": "type"}])}},
    "no-role": {"role": None},
    "no-id": {"id": None},
    "wrong-types": {"text": {"N": "3"}, "usage": {"S": "lots"}, "created_at": {"BOOL": True}},
}


@pytest.mark.parametrize("case", sorted(BAD_ITEMS))
def test_a_stored_item_that_cannot_be_rendered_does_not_break_the_read(stored_app_server: Any, user: str,
                                                                        case: str) -> None:
    base, store = stored_app_server()
    conversation = f"broken-{case}"
    assert chat(base, user, {"id": conversation, "messages": [user_message("u1")]}).status_code == 200
    item: dict[str, Any] = {"pk": {"S": conversation_pk(user, conversation)}, "sk": {"S": "M#9000000000000000"},
                            "type": {"S": "message"}, "id": {"S": "bad"}, "role": {"S": "assistant"},
                            "text": {"S": "stored text"}}
    for key, value in BAD_ITEMS[case].items():
        if value is None:
            del item[key]
        else:
            item[key] = value
    store.client.put_item(TableName=store.table, Item=item)  # written directly, as no request can any more

    response = read(base, user, conversation)
    assert response.status_code == 200, response.text[:300]
    messages = response.json()["messages"]
    assert messages[0]["id"] == "u1" and messages[0]["parts"] == [{"type": "text", "text": "hello"}]
    bad = [m for m in messages if m["id"] == "bad"]
    if case == "deep-part":  # what can be rendered is kept
        assert bad[0]["parts"] == [{"type": "text", "text": "t"}]
    elif case in ("deep-array", "garbled", "not-parts"):  # the message falls back to its text
        assert bad[0]["parts"] == [{"type": "text", "text": "stored text"}]
    elif case in ("no-role", "no-id"):
        assert bad == []  # skipped
    # A chat turn on the conversation reads the same history: it still answers.
    again = chat(base, user, {"id": conversation, "messages": [user_message("u9")]})
    assert again.status_code == 200 and again.text.endswith("data: [DONE]\n\n")
