"""Tool parts in stored conversations: kept with the assistant message, updated in place when the
turn continues, and read back by `GET /api/conversations/{id}` as `useChat` restores them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

HEADERS = {"x-test-user": "alice"}
MODEL = f"mock/tool-call?name=locate&input={quote(json.dumps({'precise': True}))}"
TOOLS = {"locate": {"description": "Where the user is.", "inputSchema": {"type": "object"}}}


def chat(url: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/api/chat", json={"id": "tools-chat", "messages": messages, "model": MODEL,
                                                   "tools": TOOLS}, headers=HEADERS, timeout=60)
    assert response.status_code == 200, response.text
    return [json.loads(line[6:]) for line in response.text.split("\n\n") if line.startswith("data: {")]


def test_a_tool_turn_is_one_stored_assistant_message_read_back_with_its_tool_parts(
        stored_app_server: Callable[..., tuple[str, Any]]) -> None:
    url, _ = stored_app_server()
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Where am I?"}]}
    first = chat(url, [user])
    message_id = first[0]["messageId"]
    call_id = next(c["toolCallId"] for c in first if c["type"] == "tool-input-available")
    stored = httpx.get(f"{url}/api/conversations/tools-chat", headers=HEADERS, timeout=30).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["id"] == message_id
    assert stored[1]["parts"] == [{"type": "step-start"}, {"type": "tool-locate", "toolCallId": call_id,
                                                           "state": "input-available", "input": {"precise": True}}]
    # The client adds the tool's output (addToolOutput) and sends the whole conversation again.
    answered = {**stored[1], "parts": [stored[1]["parts"][0], {**stored[1]["parts"][1], "state": "output-available",
                                                               "output": {"city": "Lyon"}}]}
    second = chat(url, [user, answered])
    assert second[0]["messageId"] == message_id
    stored = httpx.get(f"{url}/api/conversations/tools-chat", headers=HEADERS, timeout=30).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]  # updated, not duplicated
    parts = stored[1]["parts"]
    assert [p["type"] for p in parts] == ["step-start", "tool-locate", "step-start", "text"]
    assert parts[1]["state"] == "output-available" and parts[1]["output"] == {"city": "Lyon"}
    assert parts[3]["text"] == 'Tool locate returned: {"city":"Lyon"}'
    # A new user message starts a new turn after the stored tool turn (a new assistant message).
    later = {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "Thanks"}]}
    third = chat(url, [user, stored[1], later])
    assert third[0]["messageId"] != message_id and third[-1]["finishReason"] == "tool-calls"
