"""The exact JSON each adapter sends for a conversation with tools: definitions, the tool choice,
the assistant's calls and the tool results, in each provider's own format (Bedrock through
botocore's serializer)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chatcore import errors
from chatcore.messages import Message, ModelRequest, ToolCall, ToolResult, ToolSpec
from chatcore.providers.anthropic import AnthropicProvider
from chatcore.providers.bedrock import BedrockProvider
from chatcore.providers.gemini import GeminiProvider
from chatcore.providers.ollama import OllamaProvider
from chatcore.providers.openai import OpenAIProvider

from .bedrock_stub import bedrock_client_replaying
from .conftest import fixture_bytes, fixture_json
from .test_requests import _sent

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}
TOOLS = (ToolSpec("get_weather", "The current weather in a city.", SCHEMA),
         ToolSpec("get_time", "The time now."))
CONVERSATION = (
    Message("user", "Weather in Paris and Beijing?"),
    Message("assistant", "Checking.", tool_calls=(
        ToolCall("call_1", "get_weather", {"city": "Paris"}),
        ToolCall("call_2", "get_weather", {"city": "北京"}, metadata={"gemini": {"thoughtSignature": "sig-1"}}),
    )),
    Message("tool", "", tool_results=(
        ToolResult("call_1", "get_weather", {"temp": 21, "sky": "clear"}),
        ToolResult("call_2", "get_weather", "The weather service timed out.", is_error=True),
    )),
    Message("user", "And tomorrow?"),
)
REQUEST = ModelRequest(model="the-model", messages=CONVERSATION, system="Be brief.", tools=TOOLS,
                       tool_choice="auto")


def _with(**changes: Any) -> ModelRequest:
    fields = {"model": REQUEST.model, "messages": REQUEST.messages, "system": REQUEST.system,
              "tools": REQUEST.tools, "tool_choice": REQUEST.tool_choice, **changes}
    return ModelRequest(**fields)


# ---------------------------------------------------------------------------------- OpenAI


async def test_openai_sends_tools_calls_and_results() -> None:
    sent = await _sent("openai", REQUEST, "openai/chat_stream_tool_call.sse")
    body = json.loads(sent.content)
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.",
                                          "parameters": SCHEMA}},
        {"type": "function", "function": {"name": "get_time", "description": "The time now.",
                                          "parameters": {"type": "object", "properties": {}}}},
    ]
    assert body["tool_choice"] == "auto"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Beijing?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"北京\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":21,\"sky\":\"clear\"}"},
        {"role": "tool", "tool_call_id": "call_2", "content": "The weather service timed out."},
        {"role": "user", "content": "And tomorrow?"},
    ]


@pytest.mark.parametrize(("choice", "wire"), [
    ("none", "none"), ("required", "required"),
    ("get_time", {"type": "function", "function": {"name": "get_time"}}),
])
def test_openai_tool_choice(choice: str, wire: Any) -> None:
    assert OpenAIProvider(api_key="k").build_body(_with(tool_choice=choice))["tool_choice"] == wire


def test_openai_assistant_turn_with_only_calls_has_null_content() -> None:
    request = ModelRequest(model="m", messages=(
        Message("user", "x"), Message("assistant", "", tool_calls=(ToolCall("c", "get_time", {}),))), tools=TOOLS)
    body = OpenAIProvider(api_key="k").build_body(request)
    assert body["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}
    assert "tool_choice" not in body


def test_no_tools_means_no_tool_fields() -> None:
    plain = ModelRequest(model="m", messages=(Message("user", "x"),), tool_choice="auto")
    assert not {"tools", "tool_choice"} & set(OpenAIProvider(api_key="k").build_body(plain))
    assert not {"tools", "tool_choice"} & set(AnthropicProvider(api_key="k").build_body(plain))
    assert not {"tools", "toolConfig"} & set(GeminiProvider(api_key="k").build_body(plain))
    assert "tools" not in OllamaProvider().build_body(plain)
    assert "toolConfig" not in BedrockProvider(region="us-east-1").build_params(plain)


@pytest.mark.parametrize("provider", [
    OpenAIProvider(api_key="k"), AnthropicProvider(api_key="k"), GeminiProvider(api_key="k"),
    OllamaProvider(), BedrockProvider(region="us-east-1"),
])
def test_a_tool_choice_naming_no_offered_tool_is_a_client_error(provider: Any) -> None:
    build = getattr(provider, "build_body", None) or provider.build_params
    with pytest.raises(errors.RequestError) as info:
        build(_with(tool_choice="launch_rockets"))
    assert info.value.status_code == 400 and "launch_rockets" in info.value.message


# ------------------------------------------------------------------------------- Anthropic


async def test_anthropic_sends_tool_use_and_tool_result_blocks_in_alternating_turns() -> None:
    sent = await _sent("anthropic", REQUEST, "anthropic/messages_stream_thinking_tool.sse")
    body = json.loads(sent.content)
    assert body["tools"] == [
        {"name": "get_weather", "description": "The current weather in a city.", "input_schema": SCHEMA},
        {"name": "get_time", "description": "The time now.", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "auto"}
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Beijing?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "北京"}},
        ]},
        # The tool results and the next user message are one user turn, results first.
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "{\"temp\":21,\"sky\":\"clear\"}"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "The weather service timed out.",
             "is_error": True},
            {"type": "text", "text": "And tomorrow?"},
        ]},
    ]


@pytest.mark.parametrize(("choice", "wire"), [
    ("none", {"type": "none"}), ("required", {"type": "any"}), ("get_time", {"type": "tool", "name": "get_time"}),
])
def test_anthropic_tool_choice(choice: str, wire: Any) -> None:
    assert AnthropicProvider(api_key="k").build_body(_with(tool_choice=choice))["tool_choice"] == wire


def test_anthropic_puts_tool_results_first_when_a_user_message_precedes_them() -> None:
    request = ModelRequest(model="m", messages=(
        Message("user", "go"),
        Message("assistant", "", tool_calls=(ToolCall("c1", "get_time", "not json"),)),
        Message("user", "also this"),
        Message("tool", "", tool_results=(ToolResult("c1", "get_time", "12:00"),)),
    ), tools=TOOLS)
    messages = AnthropicProvider(api_key="k").build_body(request)["messages"]
    assert messages[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "c1", "name": "get_time", "input": {}}]}  # no blank text block; input an object
    assert messages[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "c1", "content": "12:00"}, {"type": "text", "text": "also this"}]}


# ---------------------------------------------------------------------------------- Gemini


async def test_gemini_sends_function_declarations_calls_and_responses() -> None:
    sent = await _sent("gemini", REQUEST, "gemini/stream_text.sse")
    body = json.loads(sent.content)
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "The current weather in a city.", "parametersJsonSchema": SCHEMA},
        {"name": "get_time", "description": "The time now.",
         "parametersJsonSchema": {"type": "object", "properties": {}}},
    ]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Beijing?"}]},
        {"role": "model", "parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_weather", "args": {"city": "北京"}}, "thoughtSignature": "sig-1"},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"output": {"temp": 21, "sky": "clear"}}}},
            {"functionResponse": {"name": "get_weather",
                                  "response": {"error": "The weather service timed out."}}},
            {"text": "And tomorrow?"},
        ]},
    ]


@pytest.mark.parametrize(("choice", "wire"), [
    ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
    ("get_time", {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
])
def test_gemini_tool_choice(choice: str, wire: Any) -> None:
    body = GeminiProvider(api_key="k").build_body(_with(tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": wire}


# ---------------------------------------------------------------------------------- Ollama


async def test_ollama_sends_tools_calls_and_tool_messages() -> None:
    sent = await _sent("ollama", REQUEST, "ollama/chat_stream.ndjson")
    body = json.loads(sent.content)
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.",
                                          "parameters": SCHEMA}},
        {"type": "function", "function": {"name": "get_time", "description": "The time now.",
                                          "parameters": {"type": "object", "properties": {}}}},
    ]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Beijing?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "get_weather", "arguments": {"city": "北京"}}},
        ]},
        {"role": "tool", "content": "{\"temp\":21,\"sky\":\"clear\"}", "tool_name": "get_weather"},
        {"role": "tool", "content": "The weather service timed out.", "tool_name": "get_weather"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert "tool_choice" not in body  # Ollama has none


def test_ollama_tool_choice_none_withholds_the_tools() -> None:
    assert "tools" not in OllamaProvider().build_body(_with(tool_choice="none"))


# --------------------------------------------------------------------------------- Bedrock


async def _bedrock_body(request: ModelRequest) -> dict[str, Any]:
    """What botocore serializes for `converse_stream(**build_params(request))`."""
    captured: list[Any] = []
    meta = fixture_json("bedrock/converse_stream_text.meta.json")
    client = bedrock_client_replaying(200, meta["headers"], fixture_bytes("bedrock/converse_stream_text.eventstream"))
    client.meta.events.register("before-call.bedrock-runtime.ConverseStream",
                                lambda params, **_: captured.append(json.loads(params["body"])))
    async for _ in BedrockProvider(region="us-east-1", runtime_client=client).stream(request):
        pass
    return captured[0]


async def test_bedrock_sends_tool_config_tool_use_and_tool_results() -> None:
    body = await _bedrock_body(REQUEST)
    assert body["toolConfig"] == {"tools": [
        {"toolSpec": {"name": "get_weather", "description": "The current weather in a city.",
                      "inputSchema": {"json": SCHEMA}}},
        {"toolSpec": {"name": "get_time", "description": "The time now.",
                      "inputSchema": {"json": {"type": "object", "properties": {}}}}},
    ], "toolChoice": {"auto": {}}}
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "Weather in Paris and Beijing?"}]},
        {"role": "assistant", "content": [
            {"text": "Checking."},
            {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
            {"toolUse": {"toolUseId": "call_2", "name": "get_weather", "input": {"city": "北京"}}},
        ]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "call_1", "content": [{"json": {"temp": 21, "sky": "clear"}}]}},
            {"toolResult": {"toolUseId": "call_2", "content": [{"text": "The weather service timed out."}],
                            "status": "error"}},
            {"text": "And tomorrow?"},
        ]},
    ]
    assert body["system"] == [{"text": "Be brief."}]


@pytest.mark.parametrize(("choice", "wire"), [
    ("required", {"any": {}}), ("get_time", {"tool": {"name": "get_time"}}),
])
async def test_bedrock_tool_choice(choice: str, wire: Any) -> None:
    assert (await _bedrock_body(_with(tool_choice=choice)))["toolConfig"]["toolChoice"] == wire


async def test_bedrock_tool_choice_none() -> None:
    """Converse has no "none": with tool blocks in the history the tools are still sent (Bedrock requires
    them) but no choice; without any, no toolConfig at all."""
    with_history = await _bedrock_body(_with(tool_choice="none"))
    assert "toolChoice" not in with_history["toolConfig"] and len(with_history["toolConfig"]["tools"]) == 2
    fresh = await _bedrock_body(_with(tool_choice="none", messages=(Message("user", "hi"),)))
    assert "toolConfig" not in fresh
