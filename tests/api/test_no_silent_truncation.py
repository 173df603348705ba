"""No silent truncation: whatever fails after the first token (a bug in an adapter, data the encoder
cannot encode) ends the stream with an in-stream error and `[DONE]`, never a cut-off body."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from chatcore.events import ProviderEvent, TextDelta
from chatcore.messages import ModelRequest
from chatcore.providers.base import ProbeResult


class BrokenProvider:
    """Streams one token, then fails in a way no adapter anticipates."""

    name = "broken"

    def __init__(self, failure: str) -> None:
        self.failure = failure

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        yield TextDelta("partial ")
        if self.failure == "bug":
            raise ZeroDivisionError("a bug in an adapter")
        yield TextDelta(object())  # type: ignore[arg-type]  # nothing can encode this

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        return ProbeResult("up", 0.0)


@pytest.mark.parametrize("failure", ["bug", "unencodable"])
def test_a_failure_after_the_first_token_is_an_in_stream_error(chat_server: Callable[..., str], failure: str,
                                                               sse_data: Callable[[bytes], list[str]]) -> None:
    url = chat_server(providers={"broken": BrokenProvider(failure)})
    for path in ("/api/chat", "/api/chat/sse", "/v1/chat/completions"):
        body: dict[str, Any] = {"model": "broken/m", "messages": [{"role": "user", "content": "x"}]}
        if path.startswith("/v1"):
            body["stream"] = True
        response = httpx.post(f"{url}{path}", json=body, timeout=30)
        assert response.status_code == 200
        data = sse_data(response.content)
        if not path.startswith("/v1"):  # OpenAI's streams end at the error event, as OpenAI's own do
            assert data[-1] == "[DONE]", (path, data)
        payloads = [json.loads(d) for d in data if d != "[DONE]"]
        assert "partial" in response.text
        if path == "/api/chat":
            assert any(p.get("type") == "error" for p in payloads)
            assert payloads[-1]["type"] == "finish" and payloads[-1]["finishReason"] == "error"
        else:
            assert "error" in payloads[-1]
            assert all(choice.get("finish_reason") != "stop" for p in payloads for choice in p.get("choices", []))
