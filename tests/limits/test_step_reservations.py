"""A turn with server tools holds, before each later model step, what that step sends (system prompt,
long-term memories, summary, messages with the tool results) and its output cap, on top of what the
earlier steps used: through the app on a real socket, the DynamoDB limiter and the mock model."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from chatcore.api.app import default_components
from chatcore.events import ProviderEvent, UsageReport
from chatcore.limits.limiter import DynamoDBLimiter
from chatcore.limits.policy import LimitPolicy, TierLimits
from chatcore.messages import ModelRequest
from chatcore.providers import ProviderRegistry
from chatcore.providers.base import ProbeResult
from chatcore.providers.mock import MockProvider
from fastapi import FastAPI, Request

from tests.conftest import settings_for_tests
from tests.moto_dynamodb import Table

MEMORIES = "<memories>\n" + "- The user collects antique maps of the Baltic coast.\n" * 160 + "</memories>"
OUTPUT_CAP = 200
USER = "local-user"  # AUTH_MODE=none in the tests


class Recall:
    async def recall(self, principal: Any, request: Any) -> str:
        return MEMORIES


class LongTermMemory:
    """Long-term memory as the chat path uses it (`recall.recall`): the same long block for everyone."""

    recall = Recall()


def prompt_chars(request: ModelRequest) -> int:
    """The characters a model call was sent: system text (with the memories), messages, tool calls and results."""
    total = len(request.system or "")
    for message in request.messages:
        total += len(message.content)
        total += sum(len(json.dumps(c.input)) for c in message.tool_calls)
        total += sum(len(json.dumps(r.output)) for r in message.tool_results)
    return total


class HeldTokens:
    """The mock model (`watched/<mock model>`), noting for each call the prompt it got, the usage it
    reported and the tokens the user's limits item held for the day when the call came."""

    name = "watched"

    def __init__(self, table: Table) -> None:
        self.table = table
        self.calls: list[dict[str, int]] = []
        self._mock = MockProvider(ttft_ms=0, pace_ms=0)

    def held(self) -> int:
        item = self.table.item(f"USER#{USER}#LIMITS", "LIMITS") or {}
        return sum(int(value["N"]) for name, value in item.items() if name.startswith("dt"))

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        call = {"held": await asyncio.to_thread(self.held), "sent": prompt_chars(request) // 4, "used": 0}
        self.calls.append(call)
        async for event in self._mock.stream(request):
            if isinstance(event, UsageReport):
                call["used"] = (event.usage.input_tokens or 0) + (event.usage.output_tokens or 0)
            yield event

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        return await self._mock.probe(timeout)


@pytest.mark.parametrize("ample", [False, True], ids=["near-the-limit", "ample-headroom"])
def test_a_step_after_a_tool_holds_what_it_sends_memories_included(
        chat_server: Callable[..., str], serve_asgi: Callable[..., str], table: Table, ample: bool) -> None:
    """Near the limit each top-up is written, so the item holds each step before it is sent; with
    ample headroom the top-ups stay unwritten (limits/limiter.py). Either way the turn is charged
    what its steps reported."""
    tool = FastAPI()

    @tool.post("/lookup")
    async def lookup(request: Request) -> dict[str, Any]:
        return {"echo": (await request.json())["input"]}

    tools = {"lookup": {"description": "Looks a city up.",
                        "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}},
                        "execute": {"type": "http", "url": f"{serve_asgi(tool)}/lookup"}}}
    settings = settings_for_tests(tools_json=json.dumps(tools), max_output_tokens=OUTPUT_CAP)
    # 8,000 a minute: 5 streams could not each take a step's 2,000-odd tokens more, so every top-up is written.
    limits = TierLimits(requests_per_minute=100, tokens_per_minute=10**6 if ample else 8_000, tokens_per_day=10**7,
                        concurrent_streams=5)
    limiter = DynamoDBLimiter(table.name, LimitPolicy({"free": limits}), lambda: table.client, lease_ttl_s=60)
    model = HeldTokens(table)
    components = dataclasses.replace(default_components(settings, ProviderRegistry(settings, overrides={"watched": model})),
                                     limiter=limiter, memories=LongTermMemory())
    url = chat_server(components=components)

    response = httpx.post(f"{url}/api/chat", timeout=60, json={
        "model": "watched/tool-call?name=lookup&input=" + quote('{"city":"Riga"}'),
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Go"}]}]})
    assert response.status_code == 200, response.text
    assert '"type":"tool-output-available"' in response.text and '"finishReason":"stop"' in response.text

    first, second = model.calls
    assert first["sent"] > 2_000  # the memory block is most of the prompt
    assert second["sent"] > first["sent"]  # now with the tool call and its result
    if ample:
        # Only the admission (the 2-character request and the output cap) was written.
        assert first["held"] == second["held"] < OUTPUT_CAP + 100
    else:
        # Each step is held before it is sent: the first after the history and memories were read, the
        # second on top of what the first used; every figure in estimated tokens (4 characters each),
        # as the service counts them.
        assert first["held"] >= first["sent"] + OUTPUT_CAP
        assert second["held"] >= first["used"] + second["sent"] + OUTPUT_CAP
    # Afterwards the turn is charged what both steps reported, not what was held.
    assert model.held() == first["used"] + second["used"]
