"""Tools on the OpenAI-compatible API, judged by the official `openai` Python SDK (pinned in
pyproject.toml) against the app on a real socket: client tool calls streamed and returned in OpenAI's
format, the round trip with `tool` messages, the request's tools and history reaching the provider,
the operator's server tools running inside the turn without showing as tool calls, and the 400s."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.capturing_provider import CapturingProvider

from .conftest import ToolEndpoint, http_tool, tool_model

WEATHER_MODEL = "mock/tool-call?name=get_weather&input=%7B%22city%22%3A%22Paris%22%7D"
WEATHER_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
OUTPUT = '{"temperature":21,"sky":"clear"}'


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="sk-local", max_retries=0, timeout=60)


@pytest.fixture
def sdk(chat_server: Callable[..., str]) -> openai.OpenAI:
    return client_for(chat_server())


def followup(call_id: str, arguments: str, content: str = OUTPUT) -> list[dict[str, Any]]:
    """The history an OpenAI client sends after running the call: the assistant's call, the tool's answer."""
    return [*USER,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": call_id, "content": content}]


def test_a_streamed_tool_call_round_trip(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model=WEATHER_MODEL, messages=USER, tools=[WEATHER_TOOL],
                                              stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    with_calls = [d.tool_calls for d in deltas if d.tool_calls]
    head = with_calls[0][0]
    assert (head.index, head.type, head.function.name, head.function.arguments) == (0, "function", "get_weather", "")
    assert head.id
    assert all(call.id is None and call.index == 0 for calls in with_calls[1:] for call in calls)
    assert len(with_calls) > 2  # the arguments come as the model's fragments, not one piece
    arguments = "".join(call.function.arguments or "" for calls in with_calls for call in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert not "".join(d.content or "" for d in deltas)

    # The SDK's own accumulation of the stream agrees.
    with sdk.chat.completions.stream(model=WEATHER_MODEL, messages=USER, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"

    answer = list(sdk.chat.completions.create(model=WEATHER_MODEL, messages=followup(call.id, call.function.arguments),
                                              tools=[WEATHER_TOOL], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    assert text == f"Tool get_weather returned: {json.dumps(OUTPUT)}"
    assert [c.choices[0].finish_reason for c in answer if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert not any(c.choices[0].delta.tool_calls for c in answer if c.choices)


def test_a_tool_call_round_trip_without_streaming(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model=WEATHER_MODEL, messages=USER, tools=[WEATHER_TOOL],
                                             tool_choice="auto")
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    answer = sdk.chat.completions.create(model=WEATHER_MODEL, tools=[WEATHER_TOOL],
                                         messages=followup(call.id, call.function.arguments,
                                                           content=[{"type": "text", "text": "sunny"}]))
    assert answer.choices[0].message.content == 'Tool get_weather returned: "sunny"'
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.tool_calls is None


def test_tools_tool_choice_and_tool_history_reach_the_provider(chat_server: Callable[..., str]) -> None:
    capture = CapturingProvider()
    sdk = client_for(chat_server(providers={"capture": capture}))
    other = {"type": "function", "function": {"name": "get_time"}}
    sdk.chat.completions.create(
        model="capture/" + WEATHER_MODEL.removeprefix("mock/"), tools=[WEATHER_TOOL, other],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[*followup("call_1", '{"city": "Paris"}'), {"role": "assistant", "content": "Clear."},
                  {"role": "user", "content": "And tomorrow?"}])
    [request] = capture.requests
    assert [(t.name, t.description, t.input_schema) for t in request.tools] == [
        ("get_weather", "The weather in a city.", WEATHER_TOOL["function"]["parameters"]),
        ("get_time", "", {"type": "object", "properties": {}})]
    assert request.tool_choice == "get_weather"
    roles = [m.role for m in request.messages]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    [call] = request.messages[1].tool_calls
    assert (call.id, call.name, call.input) == ("call_1", "get_weather", {"city": "Paris"})
    [result] = request.messages[2].tool_results
    assert (result.call_id, result.name, result.output, result.is_error) == ("call_1", "get_weather", OUTPUT, False)

    sdk.chat.completions.create(model="capture/echo", messages=USER, tools=[WEATHER_TOOL], tool_choice="required")
    assert capture.requests[-1].tool_choice == "required"


def test_a_server_tool_runs_in_the_turn_and_is_not_a_client_tool_call(
        chat_server: Callable[..., str], tool_endpoint: tuple[str, ToolEndpoint]) -> None:
    base, endpoint = tool_endpoint
    sdk = client_for(chat_server(tools_json=json.dumps({"lookup": http_tool(f"{base}/ok")})))
    model = tool_model("lookup", {"city": "Paris"})
    chunks = list(sdk.chat.completions.create(model=model, messages=USER, tools=[WEATHER_TOOL], stream=True))
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == 'Tool lookup returned: {"echo":{"city":"Paris"},"tool":"lookup"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert [call["input"] for call in endpoint.calls] == [{"city": "Paris"}]

    completion = sdk.chat.completions.create(model=model, messages=USER)
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].message.content == text and completion.choices[0].finish_reason == "stop"


def test_a_server_tool_that_needs_approval_ends_the_turn_without_tool_calls(
        chat_server: Callable[..., str], tool_endpoint: tuple[str, ToolEndpoint]) -> None:
    base, endpoint = tool_endpoint
    sdk = client_for(chat_server(tools_json=json.dumps({"lookup": http_tool(f"{base}/ok", needsApproval=True)})))
    completion = sdk.chat.completions.create(model=tool_model("lookup", {"city": "Paris"}), messages=USER)
    assert completion.choices[0].finish_reason == "stop" and completion.choices[0].message.tool_calls is None
    assert (completion.model_extra or {})["x_chat"]["approval_required"] is True
    assert endpoint.calls == []


def test_a_call_whose_input_fails_the_schema_goes_back_to_the_model(sdk: openai.OpenAI) -> None:
    model = tool_model("get_weather", {"town": "Paris"})  # `city` is required
    completion = sdk.chat.completions.create(model=model, messages=USER, tools=[WEATHER_TOOL])
    assert completion.choices[0].message.tool_calls is None and completion.choices[0].finish_reason == "stop"
    assert (completion.choices[0].message.content or "").startswith("Tool get_weather returned: ")
    chunks = list(sdk.chat.completions.create(model=model, messages=USER, tools=[WEATHER_TOOL], stream=True))
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)


def test_invalid_tool_call_arguments_are_a_400_naming_the_param(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=WEATHER_MODEL, tools=[WEATHER_TOOL],
                                    messages=followup("call_1", '{"city": "Par'))
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "messages.1.tool_calls.0.function.arguments"
    assert "not valid JSON" in caught.value.body["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [*USER, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]}, "messages.1.tool_call_id"),
    ({"messages": followup("call_1", "{}")[:2]}, "messages.1.tool_calls"),
    ({"messages": USER, "tools": [WEATHER_TOOL, WEATHER_TOOL]}, "tools.1.function.name"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools.0.function.name"),
    ({"messages": USER, "tools": [{"type": "retrieval"}]}, "tools.0.type"),
    ({"messages": USER, "tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"messages": USER, "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "tool_choice"),
    ({"messages": [*USER, {"role": "function", "name": "f", "content": "x"}]}, "messages.1.role"),
])
def test_malformed_tool_requests_are_400s(chat_server: Callable[..., str], body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{chat_server()}/v1/chat/completions", json={"model": WEATHER_MODEL, **body}, timeout=60)
    assert response.status_code == 400, response.text
    assert str(response.json()["error"]["param"]).startswith(param)
