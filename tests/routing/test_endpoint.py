"""Routing as the client sees it, through a real uvicorn server: headers, stream metadata, errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def chunks(body: bytes, sse_data: Callable[[bytes], list[str]]) -> list[dict[str, Any]]:
    return [json.loads(d) for d in sse_data(body) if d != "[DONE]"]


def ask(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], **extra}


def test_fallback_is_visible_in_headers_and_message_metadata(chat_server: Callable[..., str], client: httpx.Client,
                                                             sse_data: Callable[[bytes], list[str]]) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", json=ask(model="demo-fallback"))
    assert response.status_code == 200
    assert response.headers["x-chat-deployment"] == "mock-fast"
    assert response.headers["x-chat-fallbacks"] == "mock-fail-529:provider_overloaded"
    events = chunks(response.content, sse_data)
    finish = events[-1]
    assert finish["type"] == "finish" and finish["finishReason"] == "stop"
    metadata = finish["messageMetadata"]
    assert metadata["deployment"] == "mock-fast"
    assert metadata["fallbacks"] == [{"deployment": "mock-fail-529", "error": "provider_overloaded"}]
    assert metadata["costUsd"] > 0
    assert metadata["model"] == "mock/echo"


def test_complexity_picks_a_tier_and_provider_preference_is_accepted(chat_server: Callable[..., str],
                                                                     client: httpx.Client) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", json=ask(complexity="complex", provider="mock"))
    assert response.status_code == 200
    assert response.headers["x-chat-deployment"] == "mock-premium"
    assert "x-chat-fallbacks" not in response.headers
    bad = client.post(f"{url}/api/chat", json=ask(complexity="extreme"))
    assert bad.status_code == 400


def test_unknown_model_is_400_listing_the_valid_names(chat_server: Callable[..., str], client: httpx.Client) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", json=ask(model="gpt-9-ultra"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request" and "'gpt-9-ultra'" in error["message"]
    assert {"fast", "standard", "premium", "default", "mock-fast"} <= set(error["valid"])


def test_failure_after_first_token_keeps_the_partial_answer_marked_incomplete(
        chat_server: Callable[..., str], client: httpx.Client, sse_data: Callable[[bytes], list[str]]) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", json=ask(model="demo-truncated"))
    assert response.status_code == 200
    assert response.headers["x-chat-deployment"] == "mock-truncate"
    events = chunks(response.content, sse_data)
    text = "".join(e["delta"] for e in events if e["type"] == "text-delta")
    assert text == "Lorem ipsum dolor "
    assert [e["type"] for e in events][-3:] == ["error", "finish-step", "finish"]
    metadata = events[-1]["messageMetadata"]
    assert metadata["incomplete"] is True and metadata["deployment"] == "mock-truncate"


def test_context_too_long_everywhere_is_413(chat_server: Callable[..., str], client: httpx.Client) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", json=ask(model="mock-fail-context"))
    # mock-fail-context's tier (fast) has larger windows: it falls back instead.
    assert response.status_code == 200
    assert response.headers["x-chat-fallbacks"] == "mock-fail-context:context_too_long"
    response = client.post(f"{url}/api/chat", json=ask(model="mock/fail-context"))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "context_too_long"


def test_open_circuit_is_skipped_and_reported(chat_server: Callable[..., str], client: httpx.Client) -> None:
    url = chat_server()
    for _ in range(2):  # a bad key opens the circuit at once
        assert client.post(f"{url}/api/chat", json=ask(model="demo-auth")).status_code == 200
    response = client.post(f"{url}/api/chat/sse", json=ask(model="mock-fail-401"))
    assert response.status_code == 200  # the rest of its tier answers
    assert response.headers["x-chat-fallbacks"].startswith("mock-fail-401:circuit_open")


def test_provider_preference_puts_that_providers_deployments_first(chat_server: Callable[..., str],
                                                                   client: httpx.Client) -> None:
    from chatcore.providers.mock import MockProvider

    registry = {"deployments": {"mine": {"provider": "mock", "model": "echo"},
                                "theirs": {"provider": "other", "model": "echo"}},
                "aliases": {"pair": ["mine", "theirs"]}}
    url = chat_server(model_registry_json=json.dumps(registry), providers={"other": MockProvider(ttft_ms=0, pace_ms=0)})
    assert client.post(f"{url}/api/chat", json=ask(model="pair")).headers["x-chat-deployment"] == "mine"
    preferred = client.post(f"{url}/api/chat", json=ask(model="pair", provider="other"))
    assert preferred.status_code == 200 and preferred.headers["x-chat-deployment"] == "theirs"


def test_a_provider_429_with_no_fallback_left_is_a_429_with_the_providers_retry_after(
        chat_server: Callable[..., str], client: httpx.Client) -> None:
    url = chat_server()
    for _ in range(4):  # again and again: never a 503 "after repeated failures"
        response = client.post(f"{url}/api/chat", json=ask(model="mock/fail-429?retry_after=30"))
        assert response.status_code == 429
        assert response.headers["retry-after"] == "30"
        assert response.json()["error"]["code"] == "provider_rate_limited"
