"""The chat endpoints over a real socket: incremental delivery, headers, chunk order, errors.

The streaming proof uses no clocks: a provider registered by the test stops producing after a
few tokens until the test opens its gate, and the test opens it only after the first deltas
have reached the client. A server that buffered the body would deliver nothing before the gate
opens, so the read would fail with httpx's read timeout (a deadlock guard, not a measurement).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from chatcore import errors
from chatcore.events import Finish, ProviderEvent, ResponseInfo, TextDelta, Usage, UsageReport
from chatcore.messages import ModelRequest
from chatcore.providers.base import ProbeResult
from chatcore.providers.mock import tokenize

# Generous: only reached if the server buffers or hangs, never on the normal path.
READ_TIMEOUT_S = 30.0
GATE_TIMEOUT_S = 60.0

SIMPLE_BODY = {"messages": [{"role": "user", "content": "hi"}]}


class GatedProvider:
    """Yields `hold_after` tokens, then waits for the test to open `gate`, then the rest."""

    name = "gated"

    def __init__(self, tokens: list[str], hold_after: int) -> None:
        self.tokens = tokens
        self.hold_after = hold_after
        self.gate = threading.Event()
        self.produced = 0
        self.finished = False

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        yield ResponseInfo(model=request.model, response_id="gated-1")
        for index, token in enumerate(self.tokens):
            # Wait in a worker thread so the server's event loop keeps running.
            if index == self.hold_after and not await asyncio.to_thread(self.gate.wait, GATE_TIMEOUT_S):
                raise errors.ProviderTimeoutError("The test never opened the gate.", provider=self.name)
            self.produced += 1
            yield TextDelta(token)
        usage = Usage(input_tokens=1, output_tokens=len(self.tokens))
        yield UsageReport(usage)
        self.finished = True
        yield Finish(reason="stop", raw_reason="stop", usage=usage)

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        return ProbeResult("up", 0.0)


class SSEReader:
    """Reads SSE events off a live response, one at a time, as they arrive on the socket."""

    def __init__(self, response: httpx.Response) -> None:
        self._raw = response.iter_raw()
        self._buffer = b""
        self.reads = 0

    def next_data(self) -> str | None:
        """The next event's data, or None at the end of the body."""
        while b"\n\n" not in self._buffer:
            try:
                self._buffer += next(self._raw)
                self.reads += 1
            except StopIteration:
                assert not self._buffer, f"body ended inside an event: {self._buffer!r}"
                return None
        block, self._buffer = self._buffer.split(b"\n\n", 1)
        lines = block.decode().split("\n")
        assert all(line.startswith("data: ") for line in lines), lines
        return "\n".join(line[6:] for line in lines)

    def next_json(self) -> dict[str, Any]:
        data = self.next_data()
        assert data is not None and data != "[DONE]", f"expected a JSON chunk, got {data!r}"
        chunk: dict[str, Any] = json.loads(data)
        return chunk

    def rest(self) -> list[str]:
        out = []
        while (data := self.next_data()) is not None:
            out.append(data)
        return out


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT_S, connect=10.0)) as http:
        yield http


@pytest.fixture
def gated() -> Iterator[GatedProvider]:
    provider = GatedProvider(tokenize("one two three four five six"), hold_after=3)
    yield provider
    provider.gate.set()  # never leave a server thread waiting, whatever the test did


def test_ui_stream_delivers_deltas_while_the_provider_is_still_producing(
        chat_server: Callable[..., str], client: httpx.Client, gated: GatedProvider) -> None:
    url = chat_server(providers={"gated": gated})
    body = {"messages": [{"role": "user", "content": "count"}], "model": "gated/counter"}
    with client.stream("POST", f"{url}/api/chat", json=body) as response:
        assert response.status_code == 200
        reader = SSEReader(response)
        chunk = reader.next_json()
        while chunk["type"] != "text-delta":
            chunk = reader.next_json()
        # The first delta is on the client while the provider is blocked mid-answer.
        assert chunk["delta"] == "one "
        assert not gated.gate.is_set() and not gated.finished
        assert gated.produced == 3
        received = [chunk["delta"]]
        while len(received) < 3:  # every token produced so far arrives before the gate opens
            chunk = reader.next_json()
            if chunk["type"] == "text-delta":
                received.append(chunk["delta"])
        assert received == ["one ", "two ", "three "]
        assert not gated.finished
        gated.gate.set()
        tail = [json.loads(d) if d != "[DONE]" else d for d in reader.rest()]
    assert gated.finished
    deltas = [c["delta"] for c in tail if isinstance(c, dict) and c["type"] == "text-delta"]
    assert "".join(received + deltas) == "one two three four five six"
    assert tail[-1] == "[DONE]"
    assert tail[-2]["type"] == "finish" and tail[-2]["finishReason"] == "stop"


def test_sse_endpoint_delivers_deltas_while_the_provider_is_still_producing(
        chat_server: Callable[..., str], client: httpx.Client, gated: GatedProvider) -> None:
    url = chat_server(providers={"gated": gated})
    body = {"messages": [{"role": "user", "content": "count"}], "model": "gated/counter"}
    with client.stream("POST", f"{url}/api/chat/sse", json=body) as response:
        assert response.status_code == 200
        reader = SSEReader(response)
        first = reader.next_json()
        assert first == {"content": "one "}
        assert not gated.gate.is_set() and not gated.finished and gated.produced == 3
        assert [reader.next_json(), reader.next_json()] == [{"content": "two "}, {"content": "three "}]
        gated.gate.set()
        tail = reader.rest()
    assert gated.finished
    assert [json.loads(d) for d in tail[:-1]] == [{"content": t} for t in ("four ", "five ", "six")]
    assert tail[-1] == "[DONE]"


def test_ui_stream_headers(chat_server: Callable[..., str], client: httpx.Client) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", json=SIMPLE_BODY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["x-accel-buffering"] == "no"
    cache = {part.strip() for part in response.headers["cache-control"].split(",")}
    assert {"no-cache", "no-transform"} <= cache
    assert "content-length" not in response.headers  # streamed, not buffered into one body


def test_sse_headers(chat_server: Callable[..., str], client: httpx.Client) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat/sse", json=SIMPLE_BODY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["x-accel-buffering"] == "no"
    assert "no-cache" in response.headers["cache-control"]


def test_ui_stream_exact_chunk_sequence(chat_server: Callable[..., str], client: httpx.Client,
                                        sse_data: Callable[[bytes], list[str]]) -> None:
    url = chat_server()
    body = {"id": "chat-1", "model": "mock/echo",
            "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hello there"}]}]}
    response = client.post(f"{url}/api/chat", json=body)
    assert response.status_code == 200
    data = sse_data(response.content)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    types = [c["type"] for c in chunks]
    expected_text = "You said: hello there"
    n = len(tokenize(expected_text))
    assert types == ["start", "start-step", "text-start", *["text-delta"] * n, "text-end", "finish-step", "finish"]
    start, text_start, finish = chunks[0], chunks[2], chunks[-1]
    assert start["messageId"].startswith("msg_")
    assert start["messageMetadata"]["model"] == "mock/echo"
    part_ids = {c["id"] for c in chunks if c["type"].startswith("text-")}
    assert part_ids == {text_start["id"]}
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == expected_text
    assert finish["finishReason"] == "stop"
    metadata = finish["messageMetadata"]
    assert metadata["model"] == "mock/echo"
    assert metadata["usage"]["outputTokens"] == n
    assert metadata["usage"]["inputTokens"] >= 1
    assert metadata["usage"]["totalTokens"] == metadata["usage"]["inputTokens"] + n


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/sse"])
def test_simple_body_works(chat_server: Callable[..., str], client: httpx.Client,
                           sse_data: Callable[[bytes], list[str]], path: str) -> None:
    url = chat_server()
    response = client.post(f"{url}{path}", json=SIMPLE_BODY)
    assert response.status_code == 200
    data = sse_data(response.content)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    if path == "/api/chat":
        text = "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
    else:
        text = "".join(c["content"] for c in chunks)
    assert text == "You said: hi"


def test_ui_stream_error_after_start_ends_with_error_chunk(
        chat_server: Callable[..., str], client: httpx.Client, sse_data: Callable[[bytes], list[str]]) -> None:
    url = chat_server()
    body = {"model": "mock/fail-after-3?text=alpha beta gamma delta epsilon",
            "messages": [{"role": "user", "content": "go"}]}
    response = client.post(f"{url}/api/chat", json=body)
    assert response.status_code == 200  # the status line went out with the first token
    data = sse_data(response.content)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    types = [c["type"] for c in chunks]
    assert types[:3] == ["start", "start-step", "text-start"]
    assert types[3:6] == ["text-delta"] * 3
    assert "".join(c["delta"] for c in chunks[3:6]) == "alpha beta gamma "
    error = chunks[6]
    assert error == {"type": "error", "errorText": "The mock provider failed mid-stream."}
    assert "text-end" not in types  # the part stays open: the answer is incomplete
    finish = chunks[-1]
    assert finish["type"] == "finish" and finish["finishReason"] == "error"
    assert finish["messageMetadata"]["incomplete"] is True
    assert finish["messageMetadata"]["usage"]["outputTokens"] == 3


def test_sse_error_after_start_ends_with_error_event(chat_server: Callable[..., str], client: httpx.Client,
                                                     sse_data: Callable[[bytes], list[str]]) -> None:
    url = chat_server()
    body = {"model": "mock/fail-after-2?text=a b c d", "messages": [{"role": "user", "content": "go"}]}
    response = client.post(f"{url}/api/chat/sse", json=body)
    assert response.status_code == 200
    assert sse_data(response.content) == [
        '{"content":"a "}', '{"content":"b "}', '{"error":"The mock provider failed mid-stream."}', "[DONE]"]


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/sse"])
def test_rate_limited_before_first_token_is_json_429(chat_server: Callable[..., str], client: httpx.Client,
                                                      path: str) -> None:
    url = chat_server()
    body = {"model": "mock/fail-429?retry_after=7", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post(f"{url}{path}", json=body)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "provider_rate_limited"
    assert error["provider"] == "mock"


def test_rate_limited_default_retry_after(chat_server: Callable[..., str], client: httpx.Client) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", json={"model": "mock/fail-429", **SIMPLE_BODY})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"


def test_provider_auth_failure_is_json_502(chat_server: Callable[..., str], client: httpx.Client) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", json={"model": "mock/fail-401", **SIMPLE_BODY})
    # The provider rejected *our* key: a gateway error, not the caller's 401.
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "provider_authentication"


@pytest.mark.parametrize("model", ["nope/x", "no-slash", "mock/unknown-behaviour"])
def test_bad_model_is_400_or_404(chat_server: Callable[..., str], client: httpx.Client, model: str) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", json={"model": model, **SIMPLE_BODY})
    expected = 404 if model.startswith("mock/") else 400
    assert response.status_code == expected
    assert response.json()["error"]["message"]


def test_unknown_provider_is_400_naming_the_available_ones(chat_server: Callable[..., str],
                                                           client: httpx.Client) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", json={"model": "nope/x", **SIMPLE_BODY})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert "'nope'" in error["message"] and "mock" in error["message"]


@pytest.mark.parametrize("body", [{}, {"messages": []}, {"messages": [{"role": "user", "content": " "}]},
                                  {"messages": [{"role": "robot", "content": "hi"}]}])
def test_invalid_body_is_400_json(chat_server: Callable[..., str], client: httpx.Client,
                                  body: dict[str, Any]) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_malformed_json_is_400(chat_server: Callable[..., str], client: httpx.Client) -> None:
    url = chat_server()
    response = client.post(f"{url}/api/chat", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_healthz(chat_server: Callable[..., str], client: httpx.Client) -> None:
    url = chat_server()
    response = client.get(f"{url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_resume_request_answers_nothing_to_resume(chat_server: Callable[..., str]) -> None:
    base = chat_server()
    response = httpx.get(f"{base}/api/chat/some-chat-id/stream", timeout=READ_TIMEOUT_S)
    assert response.status_code == 204 and response.content == b""
