"""Storage trouble is a clear error: 503 `storage_unavailable` before streaming, an in-stream error
after it; never an opaque 500. DynamoDB is replaced by a closed port and by a fault-injecting
endpoint that speaks DynamoDB's JSON protocol."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

CHAT = {"id": "conv-1", "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}


class FaultyDynamoDB:
    """Answers each DynamoDB operation (by `X-Amz-Target`) from a script: a JSON body, or an error."""

    def __init__(self, script: Callable[[str, int], tuple[int, dict[str, Any]]]) -> None:
        self.calls: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                operation = self.headers.get("x-amz-target", "").rpartition(".")[2]
                outer.calls.append(operation)
                status, body = script(operation, outer.calls.count(operation))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/x-amz-json-1.0")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def error(code: str, status: int = 400) -> tuple[int, dict[str, Any]]:
    return status, {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": f"injected {code}"}


@pytest.fixture
def faulty() -> Iterator[Callable[..., FaultyDynamoDB]]:
    servers: list[FaultyDynamoDB] = []

    def start(script: Callable[[str, int], tuple[int, dict[str, Any]]]) -> FaultyDynamoDB:
        servers.append(FaultyDynamoDB(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def stored(endpoint: str) -> dict[str, Any]:
    return {"memory": "dynamodb", "dynamodb_endpoint_url": endpoint, "table_name": "missing-or-broken",
            "aws_region": "us-east-1"}


@pytest.fixture(autouse=True)
def _fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


def test_an_unreachable_database_is_a_503_json_error(chat_server: Callable[..., str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = chat_server(**stored(f"http://127.0.0.1:{closed.getsockname()[1]}"))
        with httpx.Client(base_url=url, timeout=60) as http:
            chat = http.post("/api/chat", json=CHAT)
            listing = http.get("/api/conversations")
    for response in (chat, listing):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "storage_unavailable"
        assert int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("code", ["ThrottlingException", "ProvisionedThroughputExceededException",
                                  "ResourceNotFoundException"])
def test_throttling_and_a_missing_table_are_503s(chat_server: Callable[..., str], faulty: Callable[..., Any],
                                                 code: str) -> None:
    database = faulty(lambda operation, n: error(code))
    url = chat_server(**stored(database.url))
    response = httpx.post(f"{url}/api/chat", json=CHAT, timeout=60)
    assert response.status_code == 503, response.text
    body = response.json()["error"]
    assert body["code"] == "storage_unavailable"
    if code == "ResourceNotFoundException":
        assert "does not exist" in body["message"]
    else:
        assert response.headers["retry-after"] == "1"


def test_the_user_message_not_stored_is_a_503_before_streaming(chat_server: Callable[..., str],
                                                               faulty: Callable[..., Any]) -> None:
    database = faulty(lambda operation, n: (200, {"Items": [], "Count": 0}) if operation == "Query"
                      else error("InternalServerError", 500))
    url = chat_server(**stored(database.url))
    response = httpx.post(f"{url}/api/chat", json=CHAT, timeout=60)
    assert response.status_code == 503 and response.json()["error"]["code"] == "storage_unavailable"


def test_an_answer_that_cannot_be_stored_ends_with_an_in_stream_error(
        chat_server: Callable[..., str], faulty: Callable[..., Any], sse_data: Callable[[bytes], list[str]]) -> None:
    def script(operation: str, n: int) -> tuple[int, dict[str, Any]]:
        if operation == "Query":
            return 200, {"Items": [], "Count": 0}
        if operation in ("UpdateItem", "PutItem") and n == 1:
            return 200, {}  # the new conversation and its user message are stored; the answer's write fails
        return error("InternalServerError", 500)

    url = chat_server(**stored(faulty(script).url))
    response = httpx.post(f"{url}/api/chat", json=CHAT, timeout=60)
    assert response.status_code == 200
    chunks = [json.loads(d) for d in sse_data(response.content) if d != "[DONE]"]
    assert any(c["type"] == "text-delta" for c in chunks)
    errors = [c for c in chunks if c["type"] == "error"]
    assert errors and "could not be saved" in errors[0]["errorText"]
    assert chunks[-1]["type"] == "finish" and chunks[-1]["finishReason"] == "error"
