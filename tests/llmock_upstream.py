"""The one launcher of the third-party `llmock` upstream emulator for every test folder.

llmock's own `LLMockServer` binds its socket before uvicorn starts (no free-port race) and serves
it from a thread on 127.0.0.1; `LLMock` controls it over its HTTP API.
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
        self.base_url = url
        self.openai_base = f"{url}/v1"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def scenario(self, *behaviors: dict[str, Any]) -> None:
        """Queue behaviours for the next requests."""
        self._call("POST", "/_llmock/scenario", {"behaviors": list(behaviors)})

    def script(self, *behaviors: dict[str, Any]) -> None:
        """Clear queued behaviours, then queue `behaviors`."""
        self._call("DELETE", "/_llmock/scenario")
        if behaviors:
            self.scenario(*behaviors)

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
