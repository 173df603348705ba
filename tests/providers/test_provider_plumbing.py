"""What every adapter shares: one mapping of transport failures, usage fields coerced (never an
exception that ends a stream), and a registry that lets a broken adapter's import error raise."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatcore import errors, providers
from chatcore.events import Finish, ProviderEvent, TextDelta, Usage, UsageReport
from chatcore.messages import Message, ModelRequest
from chatcore.providers import ProviderRegistry
from chatcore.providers.anthropic import AnthropicProvider
from chatcore.providers.bedrock import BedrockEventMapper
from chatcore.providers.gemini import GeminiProvider
from chatcore.providers.ollama import OllamaProvider
from chatcore.providers.openai import OPENAI_BASE_URL, OpenAIProvider
from chatcore.providers.streaming import parse_all, token_count
from chatcore.settings import Settings

from .conftest import PARSERS, fixture_bytes

REQUEST = ModelRequest(model="m", messages=(Message("user", "hi"),))
HTTP_ADAPTERS = {
    "openai": ("openai/chat_stream_usage.sse", lambda c: OpenAIProvider(api_key="k", http_client=c)),
    "anthropic": ("anthropic/messages_stream_text.sse", lambda c: AnthropicProvider(api_key="k", http_client=c)),
    "gemini": ("gemini/stream_text.sse", lambda c: GeminiProvider(api_key="k", http_client=c)),
    "ollama": ("ollama/chat_stream.ndjson", lambda c: OllamaProvider(http_client=c)),
}


async def _run(adapter: str, handler: Any) -> tuple[list[ProviderEvent], BaseException | None]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    events: list[ProviderEvent] = []
    async with client:
        try:
            async for event in HTTP_ADAPTERS[adapter][1](client).stream(REQUEST):
                events.append(event)
        except errors.ProviderError as exc:
            return events, exc
    return events, None


@pytest.mark.parametrize("adapter", HTTP_ADAPTERS)
@pytest.mark.parametrize(("failure", "expected"), [
    (httpx.ConnectError("refused"), errors.NetworkError),
    (httpx.ConnectTimeout("slow"), errors.ProviderTimeoutError),
    (httpx.ReadTimeout("no headers"), errors.ProviderTimeoutError),
    (httpx.RemoteProtocolError("server disconnected without a response"), errors.NetworkError),
])
async def test_failures_before_the_answer(adapter: str, failure: Exception, expected: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    events, error = await _run(adapter, handler)
    assert events == [] and type(error) is expected and error.retryable
    assert "http" not in error.message.lower() and error.provider == adapter


@pytest.mark.parametrize("adapter", HTTP_ADAPTERS)
@pytest.mark.parametrize(("failure", "expected"), [
    (httpx.ReadError("connection reset"), errors.TruncatedStreamError),
    (httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
     errors.TruncatedStreamError),
    (httpx.ReadTimeout("silent"), errors.ProviderTimeoutError),
])
async def test_failures_while_reading_the_answer(adapter: str, failure: Exception, expected: type) -> None:
    body = fixture_bytes(HTTP_ADAPTERS[adapter][0])
    cut = len(body) // 2  # a few complete events, then the connection fails

    async def content() -> AsyncIterator[bytes]:
        yield body[:cut]
        raise failure

    events, error = await _run(adapter, lambda request: httpx.Response(200, content=content()))
    assert type(error) is expected and error.retryable
    assert any(isinstance(e, TextDelta) for e in events), "what came before the failure is delivered"
    assert not any(isinstance(e, Finish) for e in events)


# ------------------------------------------------------------------------------------ usage


@pytest.mark.parametrize(("value", "count"), [
    (12, 12), ("12", 12), (" 7 ", 7), (3.0, 3), (0, 0),
    ("12a", None), ("", None), (-1, None), (2.5, None), (True, None), (None, None), ({"n": 1}, None),
    ("9" * 40, None), (float("nan"), None),
])
def test_token_count(value: object, count: int | None) -> None:
    assert token_count(value) == count


def _parse(adapter: str, body: bytes) -> tuple[Usage | None, Finish | None, list[ProviderEvent]]:
    events, error = parse_all(PARSERS[adapter](), [body])
    assert error is None, error
    usage = next((e.usage for e in reversed(events) if isinstance(e, UsageReport)), None)
    finish = events[-1] if events and isinstance(events[-1], Finish) else None
    return usage, finish, events


def test_openai_string_and_garbage_usage_fields() -> None:
    body = b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]},
        {"id": "c", "choices": [], "usage": {"prompt_tokens": "12", "completion_tokens": "lots",
                                             "prompt_tokens_details": "n/a", "completion_tokens_details":
                                             {"reasoning_tokens": [1]}}},
    ]) + b"data: [DONE]\n\n"
    usage, finish, events = _parse("openai", body)
    assert usage == Usage(input_tokens=12, output_tokens=None, cached_input_tokens=None, reasoning_tokens=None)
    assert finish is not None and finish.reason == "stop" and finish.usage == usage
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hi"]


def test_anthropic_string_and_garbage_usage_fields() -> None:
    body = b"".join(b"event: x\ndata: " + json.dumps(p).encode() + b"\n\n" for p in [
        {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": "20",
                                                                   "cache_read_input_tokens": "x"}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": "5"}},
        {"type": "message_stop"},
    ])
    usage, finish, _ = _parse("anthropic", body)
    assert usage == Usage(input_tokens=20, output_tokens=5, cached_input_tokens=None)
    assert finish is not None and finish.usage == usage


def test_gemini_string_and_garbage_usage_fields() -> None:
    chunk = {"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": "STOP"}],
             "usageMetadata": {"promptTokenCount": "9", "candidatesTokenCount": None, "thoughtsTokenCount": "two"}}
    usage, finish, _ = _parse("gemini", b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
    assert usage == Usage(input_tokens=9, output_tokens=0, cached_input_tokens=None, reasoning_tokens=None)
    assert finish is not None and finish.reason == "stop"


def test_ollama_string_and_garbage_usage_fields() -> None:
    lines = [{"model": "m", "message": {"content": "Hi"}, "done": False},
             {"model": "m", "message": {"content": ""}, "done": True, "done_reason": "stop",
              "prompt_eval_count": "26", "eval_count": {"oops": 1}}]
    usage, finish, _ = _parse("ollama", b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    assert usage == Usage(input_tokens=26, output_tokens=None)
    assert finish is not None and finish.reason == "stop"


def test_bedrock_string_and_garbage_usage_fields() -> None:
    mapper = BedrockEventMapper("bedrock", "m")
    events = mapper.handle_dict({"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Hi"}}})
    events += mapper.handle_dict({"messageStop": {"stopReason": "end_turn"}})
    events += mapper.handle_dict({"metadata": {"usage": {"inputTokens": "18", "outputTokens": "x",
                                                         "cacheReadInputTokens": "2"}}})
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.usage == Usage(input_tokens=20, output_tokens=None,
                                                                cached_input_tokens=2)


# --------------------------------------------------------------------------------- registry


def test_an_import_error_inside_an_adapter_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in an adapter module is an error, never "provider not configured"."""
    (tmp_path / "broken_adapter_for_test.py").write_text("import no_such_dependency_for_test\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(providers._MODULES, "broken", "broken_adapter_for_test")
    registry = ProviderRegistry(Settings())
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_for_test"):
        registry.get("broken")
    sys.modules.pop("broken_adapter_for_test", None)


def test_the_openai_default_url_is_the_settings_default() -> None:
    assert Settings().openai_base_url == OPENAI_BASE_URL == OpenAIProvider(api_key="k").base_url
    assert "openai" not in ProviderRegistry(Settings()).available()  # no key, default URL: disabled
    assert "openai" in ProviderRegistry(Settings(openai_base_url="http://127.0.0.1:9/v1")).available()


def test_docs_list_exactly_the_options_each_adapter_accepts() -> None:
    """docs/providers.md's option table and the adapters' allow-lists say the same thing."""
    import re

    from chatcore.providers.anthropic import ANTHROPIC_OPTIONS
    from chatcore.providers.bedrock import BEDROCK_OPTIONS
    from chatcore.providers.gemini import GEMINI_OPTIONS
    from chatcore.providers.ollama import OLLAMA_OPTIONS
    from chatcore.providers.openai import OPENAI_OPTIONS

    docs = (Path(__file__).resolve().parents[2] / "docs" / "providers.md").read_text()
    table = docs[docs.index("| provider | accepted options |"):]
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `(\w+)` \| (.+) \|$", table, re.M)}
    allowed = {"openai": OPENAI_OPTIONS, "anthropic": ANTHROPIC_OPTIONS, "gemini": GEMINI_OPTIONS,
               "bedrock": BEDROCK_OPTIONS, "ollama": OLLAMA_OPTIONS}
    for name, options in allowed.items():
        # The first backticked word of each item (examples in parentheses are not option names).
        listed = {re.match(r"[^`]*`(\w+)`", item)[1]  # type: ignore[index]
                  for item in re.split(r", (?![^(]*\))|\band for compatible servers\b", rows[name]) if "`" in item}
        assert listed == set(options), name


async def test_a_streamed_tool_call_counts_as_the_first_token() -> None:
    """After a tool call starts, a silence is a stall "between tokens" (the idle clock), not a wait for
    the first token."""
    import asyncio

    from chatcore.clocks import Clocks, timed
    from chatcore.events import ToolInputStart

    async def tool_then_silence() -> AsyncIterator[ProviderEvent]:
        yield ToolInputStart("call_1", "f")
        await asyncio.Event().wait()

    seen: list[ProviderEvent] = []
    with pytest.raises(errors.ProviderTimeoutError, match="between tokens"):
        async for event in timed(tool_then_silence(), Clocks.start(first_token_s=20, idle_s=0.05, total_s=60)):
            seen.append(event)
    assert seen == [ToolInputStart("call_1", "f")]
