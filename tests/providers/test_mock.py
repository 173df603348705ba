"""The mock provider's tool call and its bounds (a caller must not make it build gigabytes of text,
sleep for hours, or answer a malformed parameter with a 500)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from chatcore import errors
from chatcore.events import (
    Finish,
    ProviderEvent,
    TextDelta,
    ToolInputDelta,
    ToolInputReady,
    ToolInputStart,
)
from chatcore.messages import Message, ModelRequest, ToolCall, ToolResult
from chatcore.providers.mock import MAX_PACE_MS, MAX_TOKENS, MAX_TTFT_MS, MockProvider, MockScenario

MOCK = MockProvider(ttft_ms=0, pace_ms=0, tokens=40)
INPUT = {"city": "Zürich", "days": [1, 2], "units": {"t": "celsius"}}
TOOL_MODEL = f"tool-call?name=get_weather&input={quote(json.dumps(INPUT))}"


async def _events(model: str, messages: tuple[Message, ...] = (Message("user", "Weather?"),),
                  max_output_tokens: int | None = None) -> list[ProviderEvent]:
    request = ModelRequest(model=model, messages=messages, max_output_tokens=max_output_tokens)
    return [event async for event in MOCK.stream(request)]


async def test_tool_call_when_the_user_spoke_last() -> None:
    events = await _events(TOOL_MODEL)
    (start,) = [e for e in events if isinstance(e, ToolInputStart)]
    deltas = [e for e in events if isinstance(e, ToolInputDelta)]
    (ready,) = [e for e in events if isinstance(e, ToolInputReady)]
    assert start.name == ready.name == "get_weather" and start.call_id == ready.call_id
    assert len(deltas) > 1 and all(d.call_id == start.call_id for d in deltas)
    assert json.loads("".join(d.delta for d in deltas)) == INPUT
    assert ready.input == INPUT and ready.error is None
    assert not any(isinstance(e, TextDelta) for e in events)
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "tool_calls"
    assert events.index(start) < events.index(deltas[0]) < events.index(ready) < len(events) - 1


async def test_answer_after_the_tool_result() -> None:
    call = ToolCall("call_1", "get_weather", INPUT)
    history = (Message("user", "Weather?"), Message("assistant", "", tool_calls=(call,)),
               Message("tool", "", tool_results=(ToolResult("call_1", "get_weather", {"temp": 21, "sky": "ciel ☀"}),)))
    events = await _events(TOOL_MODEL, history)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == 'Tool get_weather returned: {"temp":21,"sky":"ciel \\u2600"}'
    assert text == "Tool get_weather returned: " + json.dumps({"temp": 21, "sky": "ciel ☀"}, separators=(",", ":"))
    assert not any(isinstance(e, ToolInputStart) for e in events)
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"


async def test_each_turn_gets_its_own_call_id() -> None:
    first = await _events(TOOL_MODEL, (Message("user", "a"),))
    second = await _events(TOOL_MODEL, (Message("user", "a"), Message("assistant", "x"), Message("user", "b")))
    ids = [e.call_id for e in first + second if isinstance(e, ToolInputStart)]
    assert len(ids) == 2 and ids[0] != ids[1]


@pytest.mark.parametrize("model", ["tool-call", "tool-call?input=%7B%7D", "tool-call?name=f&input=%7Bnot"])
async def test_malformed_tool_call_model_is_a_client_error(model: str) -> None:
    with pytest.raises(errors.RequestError) as info:
        await _events(model)
    assert info.value.status_code == 400


async def test_tokens_are_clamped_to_the_output_cap_before_text_is_built() -> None:
    # Without the clamp, this would build a trillion words before streaming the first.
    events = await _events("lorem?tokens=1000000000000", max_output_tokens=5)
    assert len([e for e in events if isinstance(e, TextDelta)]) == 5
    assert isinstance(events[-1], Finish) and events[-1].reason == "length"


async def test_short_answers_under_the_cap_still_stop() -> None:
    events = await _events("lorem?tokens=3", max_output_tokens=5)
    assert len([e for e in events if isinstance(e, TextDelta)]) == 3
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"


def test_parameters_are_capped() -> None:
    scenario = MockScenario.parse("lorem?tokens=1000000000000&ttft_ms=1e12&pace_ms=99999999", ttft_ms=0,
                                  pace_ms=0, tokens=40)
    assert (scenario.tokens, scenario.ttft_ms, scenario.pace_ms) == (MAX_TOKENS, MAX_TTFT_MS, MAX_PACE_MS)
    assert MockScenario.parse("lorem?ttft_ms=-5", ttft_ms=0, pace_ms=0, tokens=40).ttft_ms == 0
    # The operator's defaults are bounded too.
    assert MockScenario.parse("lorem", ttft_ms=1e9, pace_ms=1e9, tokens=10**9).tokens == MAX_TOKENS


@pytest.mark.parametrize("model", [
    "fail-after-x", "stall-after-y", "truncate-after-z", "fail-after", "fail-nope",
    "lorem?tokens=many", "echo?ttft_ms=nan", "echo?pace_ms=inf", "fail-429?retry_after=soon",
])
async def test_malformed_parameters_are_client_errors(model: str) -> None:
    with pytest.raises(errors.RequestError) as info:
        await _events(model)
    assert info.value.status_code == 400 and not isinstance(info.value, errors.ProviderError)


@pytest.mark.parametrize("model", ["mock/fail-after-x", "mock/lorem?tokens=lots"])
def test_malformed_mock_model_is_a_400_over_http(model: str, chat_server: Callable[..., str]) -> None:
    url = chat_server()
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "model": model}
    response = httpx.post(f"{url}/api/chat", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"


def test_lorem_over_http_is_bounded_by_max_output_tokens(chat_server: Callable[..., str],
                                                         sse_data: Callable[[bytes], list[str]]) -> None:
    url = chat_server(mock_ttft_ms=0, mock_pace_ms=0)
    body = {"messages": [{"role": "user", "content": "hi"}], "model": "mock/lorem?tokens=12000000",
            "maxOutputTokens": 5}
    response = httpx.post(f"{url}/api/chat", json=body, timeout=60)
    assert response.status_code == 200
    chunks = [json.loads(d) for d in sse_data(response.content) if d != "[DONE]"]
    text = "".join(c.get("delta", "") for c in chunks if c["type"] == "text-delta")
    assert len(text.split()) == 5
    assert chunks[-1]["type"] == "finish" and chunks[-1]["finishReason"] == "length"
