"""The llmock upstream emulator for routing and health tests, on 127.0.0.1 on a free port, in a thread.

Imported by the conftest of `tests/routing` and `tests/health`. (DynamoDB: the suite-wide `table`
fixture in tests/conftest.py.)
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest


class LLMock:
    """Control of a running llmock: queue scenarios, read the journal."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.openai_base = f"{url}/v1"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def scenario(self, *behaviors: dict[str, Any]) -> None:
        self._call("POST", "/_llmock/scenario", {"behaviors": list(behaviors)})

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        records = self._call("GET", "/_llmock/requests")["requests"]
        return [r for r in records if path is None or r["path"].endswith(path)]

    def reset(self) -> None:
        self._call("POST", "/_llmock/reset")


@pytest.fixture(scope="session")
def llmock_server() -> Iterator[LLMock]:
    """The llmock upstream emulator, served by uvicorn on 127.0.0.1 in a thread."""
    from llmock.testing import LLMockServer

    with LLMockServer(host="127.0.0.1") as server:
        yield LLMock(server.url)


@pytest.fixture
def llmock(llmock_server: LLMock) -> Iterator[LLMock]:
    """The llmock server with no scripted behaviours and an empty journal."""
    llmock_server.reset()
    yield llmock_server
    llmock_server.reset()
