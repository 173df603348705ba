"""Silent streams get `: ping` comments (after KEEPALIVE_S without output); every client ignores them."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.api.test_aisdk_client import NODE, assistant_text, consume, pytestmark  # noqa: F401

SILENT_FIRST = "mock/lorem?tokens=3&ttft_ms=0&pace_ms=800"  # 0.8 s without a byte between tokens


def test_a_silent_model_gets_pings_that_the_ai_sdk_client_ignores(chat_server: Callable[..., str]) -> None:
    url = chat_server(keepalive_s=0.1)
    raw = httpx.post(f"{url}/api/chat", json={"model": SILENT_FIRST, "messages": [{"role": "user", "content": "x"}]},
                     timeout=60).content
    between_tokens = raw.split(b'"type":"text-delta"', 1)[1].rsplit(b'"type":"text-delta"', 1)[0]
    assert b": ping\n\n" in between_tokens  # sent in the silence between two tokens
    result = consume(url, SILENT_FIRST, "hello")
    assert result["status"] == "ready" and result["error"] is None
    assert assistant_text(result["messages"][1]) == "Lorem ipsum dolor"


def test_the_plain_sse_endpoint_pings_and_a_line_parser_still_gets_the_text(chat_server: Callable[..., str]) -> None:
    """The seed's plain SSE client reads `data:` lines and skips anything else."""
    url = chat_server(keepalive_s=0.1)
    text, pings = "", 0
    with httpx.stream("POST", f"{url}/api/chat/sse", json={"model": SILENT_FIRST, "messages": [
            {"role": "user", "content": "x"}]}, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith(":"):
                pings += 1
            elif line.startswith("data: ") and line != "data: [DONE]":
                import json

                text += json.loads(line[6:]).get("content", "")
    assert pings >= 1 and text == "Lorem ipsum dolor"


def test_no_pings_while_tokens_flow(chat_server: Callable[..., str]) -> None:
    """Tokens 20 ms apart, a keep-alive after 2 s of silence: output resets the clock, so none is sent."""
    url = chat_server(keepalive_s=2.0)
    raw = httpx.post(f"{url}/api/chat", json={"model": "mock/lorem?tokens=150&pace_ms=20", "messages": [
        {"role": "user", "content": "x"}]}, timeout=60).content
    assert b": ping" not in raw
