"""A refused large body: a client that writes its whole body before reading the response (Python's
`http.client`, many proxies) still reads the 413 JSON error, never a connection reset."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

TWENTY_MB = 20 * 1024 * 1024


def post_whole_body(base: str, path: str, body: bytes | Iterator[bytes], *, chunked: bool = False,
                    ) -> tuple[int, dict[str, str], bytes]:
    """POST the whole body first, then read the response (what http.client and many proxies do)."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        headers = {"content-type": "application/json"}
        if chunked:
            connection.request("POST", path, body=body, headers=headers, encode_chunked=True)
        else:
            connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def big_chat_body(size: int) -> bytes:
    prefix = b'{"messages": [{"role": "user", "content": "'
    suffix = b'"}]}'
    return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix


def in_chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


@pytest.mark.parametrize("path", ["/api/chat", "/api/conversations/x"])
def test_a_20_mb_body_with_content_length_gets_the_413_json(chat_server: Any, path: str) -> None:
    base = chat_server()
    status, headers, body = post_whole_body(base, path, big_chat_body(TWENTY_MB))
    assert status == 413
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_a_20_mb_chunked_body_gets_the_413_json(chat_server: Any) -> None:
    base = chat_server()
    status, headers, body = post_whole_body(base, "/api/chat", in_chunks(big_chat_body(TWENTY_MB)), chunked=True)
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_openai_paths_keep_their_error_shape(chat_server: Any) -> None:
    base = chat_server()
    for chunked in (False, True):
        big = big_chat_body(TWENTY_MB)
        status, _, body = post_whole_body(base, "/v1/chat/completions", in_chunks(big) if chunked else big,
                                          chunked=chunked)
        assert status == 413
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "payload_too_large", error


def test_the_server_still_answers_after_a_refused_body(chat_server: Any) -> None:
    base = chat_server()
    assert post_whole_body(base, "/api/chat", big_chat_body(TWENTY_MB))[0] == 413
    status, _, body = post_whole_body(base, "/api/chat", json.dumps(
        {"messages": [{"role": "user", "content": "hi"}]}).encode())
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")


def nested(depth: int) -> object:
    value: object = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


def test_deep_json_in_an_openai_request_is_a_400_in_the_openai_shape(chat_server: Any) -> None:
    base = chat_server()
    hello = [{"role": "user", "content": "hi"}]
    cases = {
        "unknown-key": {"model": "mock/echo", "messages": hello, "metadata": nested(900)},
        "tools": {"model": "mock/echo", "messages": hello,
                  "tools": [{"type": "function", "function": {"name": "t", "parameters": nested(100)}}]},
        "response-format": {"model": "mock/echo", "messages": hello,
                            "response_format": {"type": "json_schema", "json_schema": nested(35)}},
        "tool-calls": {"model": "mock/echo", "messages": [*hello, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "t", "arguments": "{}"}, "x": nested(100)}]},
            {"role": "user", "content": "again"}]},
    }
    for name, body in cases.items():
        status, _, raw = post_whole_body(base, "/v1/chat/completions", json.dumps(body).encode())
        assert status == 400, (name, status, raw[:300])
        error = json.loads(raw)["error"]
        assert error["type"] == "invalid_request_error" and "depth" in error["message"], (name, error)
