"""An MCP server's tool list: a failed listing backs off instead of delaying every turn, concurrent
turns share one listing attempt, and servers are listed independently. A real MCP server on
127.0.0.1 behind a gate that counts the requests it gets; the backoff runs on an injected clock."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from chatcore.service.tools import McpExecutor, ToolRegistry, parse_tools

from tests.conftest import settings_for_tests

from .conftest import ui_chunks


class McpGate:
    """ASGI wrapper of an MCP server: records each JSON-RPC method it is sent (`initialize` starts
    every listing attempt), answers 503 while `down`, and holds `initialize` until `opened`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.methods: list[str] = []
        self.down = False
        self.opened = threading.Event()
        self.opened.set()

    def count(self, method: str) -> int:
        return self.methods.count(method)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        payload = json.loads(body or b"{}")
        method = str(payload.get("method", "")) if isinstance(payload, dict) else "batch"
        self.methods.append(method)
        if method == "initialize":
            await asyncio.to_thread(self.opened.wait, 30)
        if self.down:
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"down"})
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        await self.app(scope, replay, send)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def weather_server() -> Any:
    from mcp.server.fastmcp import FastMCP

    server = FastMCP("weather", stateless_http=True)

    @server.tool()
    def forecast(city: str) -> dict[str, Any]:
        """The weather forecast for a city."""
        return {"city": city, "sky": "clear"}

    return server.streamable_http_app()


@pytest.fixture
def mcp_gate(serve_asgi: Callable[..., str]) -> Iterator[Callable[[], tuple[str, McpGate]]]:
    """Factory: a weather MCP server behind a gate; returns its /mcp URL and the gate."""
    gates: list[McpGate] = []

    def start() -> tuple[str, McpGate]:
        gate = McpGate(weather_server())
        gates.append(gate)
        return serve_asgi(gate, lifespan="on") + "/mcp", gate  # the session manager runs in its lifespan

    yield start
    for gate in gates:
        gate.opened.set()  # never leave a server thread waiting


def registry(clock: Clock, **urls: str) -> ToolRegistry:
    """Tools named after the keys, each the `forecast` tool of the MCP server at its URL."""
    tools = parse_tools({name: {"execute": {"type": "mcp", "url": url, "tool": "forecast", "timeoutS": 10}}
                         for name, url in urls.items()}, "test")
    return ToolRegistry(settings_for_tests(), tools, mcp=McpExecutor(clock=clock))


async def offered(tools: ToolRegistry) -> list[str]:
    return sorted(spec.name for spec in (await tools.toolset(())).specs())


async def test_a_failed_listing_is_not_retried_until_its_backoff_ends(
        mcp_gate: Callable[[], tuple[str, McpGate]]) -> None:
    url, gate = mcp_gate()
    clock = Clock()
    tools = registry(clock, weather=url)
    gate.down = True
    assert await offered(tools) == []
    assert gate.count("initialize") == 1
    for _ in range(5):  # later turns go on without the server's tools, without contacting it
        clock.now += 5
        assert await offered(tools) == []
    assert gate.count("initialize") == 1
    clock.now = 1000.0 + 30  # the first backoff (30 s) ends: one turn lists again, and fails again
    assert await offered(tools) == []
    assert gate.count("initialize") == 2
    clock.now += 59  # the second backoff is twice as long
    assert await offered(tools) == []
    assert gate.count("initialize") == 2
    gate.down = False
    clock.now += 1
    assert await offered(tools) == ["weather"]  # the server is back: its tools are restored
    assert gate.count("initialize") == 3
    for _ in range(3):
        assert await offered(tools) == ["weather"]
    assert gate.count("initialize") == 3 and gate.count("tools/list") == 1  # and the listing is cached
    spec = (await tools.toolset(())).specs()[0]
    assert spec.description == "The weather forecast for a city." and spec.input_schema["required"] == ["city"]


async def test_concurrent_turns_share_one_slow_listing(mcp_gate: Callable[[], tuple[str, McpGate]]) -> None:
    url, gate = mcp_gate()
    tools = registry(Clock(), weather=url)
    gate.opened.clear()
    turns = [asyncio.create_task(offered(tools)) for _ in range(5)]
    while gate.count("initialize") == 0:  # the first listing attempt has reached the server and is held
        await asyncio.sleep(0.01)
    assert not any(turn.done() for turn in turns)
    gate.opened.set()
    assert await asyncio.gather(*turns) == [["weather"]] * 5
    assert gate.count("initialize") == 1 and gate.count("tools/list") == 1


async def test_a_turn_cancelled_during_the_listing_does_not_cancel_it_for_the_others(
        mcp_gate: Callable[[], tuple[str, McpGate]]) -> None:
    url, gate = mcp_gate()
    tools = registry(Clock(), weather=url)
    gate.opened.clear()
    first, second = asyncio.create_task(offered(tools)), asyncio.create_task(offered(tools))
    while gate.count("initialize") == 0:
        await asyncio.sleep(0.01)
    first.cancel()  # its client went away
    gate.opened.set()
    assert await second == ["weather"]
    assert first.cancelled() and gate.count("initialize") == 1


async def test_servers_are_listed_independently(mcp_gate: Callable[[], tuple[str, McpGate]]) -> None:
    """A held listing of one server does not hold another's; a backing-off server is skipped at once."""
    (slow_url, slow), (fast_url, fast), (down_url, down) = mcp_gate(), mcp_gate(), mcp_gate()
    tools = registry(Clock(), slow=slow_url, fast=fast_url, down=down_url)
    down.down = True
    slow.opened.clear()
    turn = asyncio.create_task(offered(tools))
    while fast.count("tools/list") == 0 or down.count("initialize") == 0:  # listed while `slow` is held
        await asyncio.sleep(0.01)
    assert slow.count("initialize") == 1 and slow.count("tools/list") == 0
    slow.opened.set()
    assert await turn == ["fast", "slow"]
    assert await offered(tools) == ["fast", "slow"]  # `down` backs off: not contacted again
    assert down.count("initialize") == 1 and fast.count("initialize") == 1 and slow.count("initialize") == 1


def test_a_chat_turn_goes_on_without_a_down_servers_tools_and_the_next_does_not_wait_for_it(
        chat_server: Callable[..., str], mcp_gate: Callable[[], tuple[str, McpGate]]) -> None:
    url, gate = mcp_gate()
    gate.down = True
    chat = chat_server(tools_json=json.dumps({"weather": {"execute": {"type": "mcp", "url": url, "tool": "forecast"}}}))
    for _ in range(3):
        response = httpx.post(f"{chat}/api/chat", json={
            "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}],
            "model": "mock/echo"}, timeout=60)
        assert response.status_code == 200, response.text
        chunks = ui_chunks(response.text)
        assert chunks[-1]["type"] == "finish" and "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
    assert gate.count("initialize") == 1  # the first turn's listing failed; the next two skipped the server
