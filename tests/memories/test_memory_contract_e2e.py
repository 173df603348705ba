"""The outside contract, end to end over HTTP: `SUMMARY_MODEL=mock/summarize`, an OpenAI-format upstream
on 127.0.0.1 (llmock, which journals every request it receives)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

CONTRACT_S = 10.0


def system_prompt_of(request: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in request["body"]["messages"] if m.get("role") == "system")


def test_remembered_in_the_next_conversation_until_deleted(memory_app: Callable[..., Any], llmock: Any,
                                                           new_user: Callable[[], str]) -> None:
    base, _ = memory_app(summary_model="mock/summarize", openai_api_key="sk-test",
                         openai_base_url=llmock.openai_base)
    user = new_user()
    headers = {"x-test-user": user}

    def turn(conversation: str, text: str, model: str) -> None:
        body = {"id": conversation, "model": model,
                "messages": [{"id": f"{conversation}-u", "role": "user", "parts": [{"type": "text", "text": text}]}]}
        response = httpx.post(f"{base}/api/chat", json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text

    turn("first", "Hello! Remember: my favourite colour is teal", "mock/echo")
    deadline = time.monotonic() + CONTRACT_S
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:
        listed = httpx.get(f"{base}/api/memories", headers=headers, timeout=30).json()["memories"]
        found = [m for m in listed if "favourite colour is teal" in m["text"]]
        time.sleep(0.05)
    assert found, "the memory was not listed within 10 s"

    turn("second", "What colour should I paint my door?", "openai/gpt-4o-mini")
    calls = llmock.requests("/chat/completions")
    assert calls and "favourite colour is teal" in system_prompt_of(calls[-1])

    assert httpx.delete(f"{base}/api/memories/{found[0]['id']}", headers=headers, timeout=30).status_code == 204
    turn("third", "And my kitchen?", "openai/gpt-4o-mini")
    calls = llmock.requests("/chat/completions")
    assert "favourite colour is teal" not in system_prompt_of(calls[-1])
    assert "favourite colour is teal" not in str(calls[-1]["body"])
