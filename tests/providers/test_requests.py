"""The requests each adapter sends: URL, headers, and a body that follows the provider's rules."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
import pytest
from chatcore import errors
from chatcore.messages import Message, ModelRequest
from chatcore.providers import ProviderRegistry, split_model
from chatcore.providers.anthropic import AnthropicProvider
from chatcore.providers.bedrock import BedrockProvider
from chatcore.providers.gemini import GeminiProvider
from chatcore.providers.ollama import OllamaProvider
from chatcore.providers.openai import OpenAIProvider
from chatcore.settings import Settings

from .bedrock_stub import bedrock_client_replaying
from .conftest import fixture_bytes, fixture_json
from .test_fixture_streams import _provider_with_body

HISTORY = (
    Message("user", "Hi"),
    Message("user", "Are you there?"),
    Message("assistant", "Yes."),
    Message("assistant", "How can I help?"),
    Message("user", "Tell me a joke."),
)
FULL = ModelRequest(model="the-model", messages=HISTORY, system="Be brief.", temperature=0.3,
                    max_output_tokens=256, stop=("END",))


async def _sent(adapter: str, request: ModelRequest, fixture: str) -> httpx.Request:
    seen: list[httpx.Request] = []
    meta = fixture_json(fixture.replace(".sse", ".meta.json").replace(".ndjson", ".meta.json"))
    provider, client = _provider_with_body(adapter, 200, meta["headers"], fixture_bytes(fixture), seen)
    async with client:
        async for _ in provider.stream(request):
            pass
    assert len(seen) == 1
    return seen[0]


async def test_openai_request() -> None:
    sent = await _sent("openai", FULL, "openai/chat_stream_usage.sse")
    assert str(sent.url) == "https://api.openai.com/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test-key-123456"
    body = json.loads(sent.content)
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in body["messages"][1:]] == ["user", "user", "assistant", "assistant", "user"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 256 and body["temperature"] == 0.3 and body["stop"] == ["END"]


def test_openai_compatible_servers_get_max_tokens() -> None:
    provider = OpenAIProvider(api_key=None, base_url="http://127.0.0.1:8000/v1")
    body = provider.build_body(FULL)
    assert body["max_tokens"] == 256 and "max_completion_tokens" not in body
    assert "authorization" not in provider._headers()


async def test_anthropic_request_merges_turns_and_lifts_system() -> None:
    sent = await _sent("anthropic", FULL, "anthropic/messages_stream_text.sse")
    assert str(sent.url) == "https://api.anthropic.com/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test-123456"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    body = json.loads(sent.content)
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": "Hi\n\nAre you there?"},
        {"role": "assistant", "content": "Yes.\n\nHow can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    assert body["max_tokens"] == 256 and body["stop_sequences"] == ["END"] and body["stream"] is True


def test_anthropic_max_tokens_is_always_sent() -> None:
    body = AnthropicProvider(api_key="k").build_body(ModelRequest(model="m", messages=(Message("user", "x"),)))
    assert body["max_tokens"] > 0


async def test_gemini_request_uses_model_role_and_system_instruction() -> None:
    request = ModelRequest(model="gemini-2.5-flash", messages=HISTORY, system="Be brief.", temperature=0.3,
                           max_output_tokens=256, stop=("END",),
                           options={"gemini": {"thinkingConfig": {"includeThoughts": True}}})
    sent = await _sent("gemini", request, "gemini/stream_text.sse")
    assert str(sent.url) == ("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash"
                             ":streamGenerateContent?alt=sse")
    assert sent.headers["x-goog-api-key"] == "AIzaTestKey1234567890"
    assert "key=" not in str(sent.url)
    body = json.loads(sent.content)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][0]["parts"] == [{"text": "Hi"}, {"text": "Are you there?"}]
    assert body["generationConfig"] == {"temperature": 0.3, "maxOutputTokens": 256, "stopSequences": ["END"],
                                        "thinkingConfig": {"includeThoughts": True}}


async def test_ollama_request() -> None:
    request = ModelRequest(model="llama3.2", messages=HISTORY[:1], system="Be brief.", temperature=0.3,
                           max_output_tokens=256, options={"ollama": {"think": True, "options": {"num_ctx": 8192}}})
    sent = await _sent("ollama", request, "ollama/chat_stream.ndjson")
    assert str(sent.url) == "http://127.0.0.1:11434/api/chat"
    body = json.loads(sent.content)
    assert body == {"model": "llama3.2", "stream": True, "think": True,
                    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                    "options": {"temperature": 0.3, "num_predict": 256, "num_ctx": 8192}}


async def test_bedrock_request_parameters() -> None:
    captured: list[Any] = []
    meta = fixture_json("bedrock/converse_stream_text.meta.json")
    client = bedrock_client_replaying(200, meta["headers"], fixture_bytes("bedrock/converse_stream_text.eventstream"))
    client.meta.events.register("before-call.bedrock-runtime.ConverseStream",
                                lambda params, **_: captured.append(json.loads(params["body"])))
    provider = BedrockProvider(region="us-east-1", runtime_client=client)
    request = ModelRequest(model="anthropic.claude-3-haiku-20240307-v1:0", messages=HISTORY, system="Be brief.",
                           temperature=0.3, max_output_tokens=256, stop=("END",),
                           options={"bedrock": {"topP": 0.9}})
    async for _ in provider.stream(request):
        pass
    body = captured[0]
    assert body["system"] == [{"text": "Be brief."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [{"text": "Hi"}, {"text": "Are you there?"}]
    assert body["inferenceConfig"] == {"maxTokens": 256, "temperature": 0.3, "stopSequences": ["END"], "topP": 0.9}


@pytest.mark.parametrize("provider", [
    OpenAIProvider(api_key="k"), AnthropicProvider(api_key="k"), GeminiProvider(api_key="k"),
    OllamaProvider(), BedrockProvider(region="us-east-1"),
])
def test_unknown_provider_option_is_a_client_error(provider: Any) -> None:
    name = provider.name
    request = ModelRequest(model="m", messages=(Message("user", "x"),), options={name: {"no_such_option": 1}})
    build = getattr(provider, "build_body", None) or provider.build_params
    with pytest.raises(errors.RequestError) as info:
        build(request)
    assert info.value.status_code == 400 and "no_such_option" in info.value.message


def test_registry_enables_providers_from_settings() -> None:
    empty = ProviderRegistry(Settings())
    assert empty.available() == ["mock"]
    configured = ProviderRegistry(Settings(openai_api_key="sk-x", anthropic_api_key="a", gemini_api_key="g",
                                           ollama_base_url="http://127.0.0.1:11434", bedrock_enabled=True))
    assert configured.available() == ["anthropic", "bedrock", "gemini", "mock", "ollama", "openai"]
    assert isinstance(configured.get("anthropic"), AnthropicProvider)
    assert isinstance(configured.get("gemini"), GeminiProvider)
    assert isinstance(configured.get("ollama"), OllamaProvider)
    assert isinstance(configured.get("bedrock"), BedrockProvider)
    assert split_model("bedrock/anthropic.claude-3-haiku-20240307-v1:0") == (
        "bedrock", "anthropic.claude-3-haiku-20240307-v1:0")
    assert split_model("ollama/llama3.2") == ("ollama", "llama3.2")


# --- Sampling parameters and JSON output (the OpenAI-compatible API's request fields) ----------------

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}
SAMPLED = ModelRequest(model="m", messages=(Message("user", "x"),), top_p=0.5, seed=42, stop=("END",),
                       response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}})


def test_openai_sends_top_p_seed_stop_and_response_format() -> None:
    body = OpenAIProvider(api_key="k").build_body(SAMPLED)
    assert body["top_p"] == 0.5 and body["seed"] == 42 and body["stop"] == ["END"]
    assert body["response_format"] == SAMPLED.response_format


def test_gemini_sends_top_p_seed_and_a_json_schema() -> None:
    config = GeminiProvider(api_key="k").build_body(SAMPLED)["generationConfig"]
    assert config["topP"] == 0.5 and config["seed"] == 42 and config["stopSequences"] == ["END"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == SCHEMA
    plain_json = replace(SAMPLED, response_format={"type": "json_object"})
    config = GeminiProvider(api_key="k").build_body(plain_json)["generationConfig"]
    assert config["responseMimeType"] == "application/json" and "responseJsonSchema" not in config


def test_ollama_sends_top_p_seed_and_format() -> None:
    body = OllamaProvider().build_body(SAMPLED)
    assert body["options"]["top_p"] == 0.5 and body["options"]["seed"] == 42 and body["format"] == SCHEMA
    assert OllamaProvider().build_body(replace(SAMPLED, response_format={"type": "json_object"}))["format"] == "json"
    assert "format" not in OllamaProvider().build_body(replace(SAMPLED, response_format={"type": "text"}))


def test_anthropic_and_bedrock_send_top_p_and_refuse_json_output() -> None:
    text = replace(SAMPLED, response_format={"type": "text"})
    anthropic = AnthropicProvider(api_key="k").build_body(text)
    assert anthropic["top_p"] == 0.5 and anthropic["stop_sequences"] == ["END"] and "seed" not in anthropic
    bedrock = BedrockProvider(region="us-east-1").build_params(text)
    assert bedrock["inferenceConfig"]["topP"] == 0.5
    for build in (AnthropicProvider(api_key="k").build_body, BedrockProvider(region="us-east-1").build_params):
        with pytest.raises(errors.RequestError) as info:
            build(SAMPLED)
        assert info.value.status_code == 400 and info.value.details["param"] == "response_format"
