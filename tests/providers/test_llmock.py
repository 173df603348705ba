"""The adapters against an upstream nobody here wrote: the third-party `llmock` emulator.

llmock speaks OpenAI (`/v1`), Anthropic (`/anthropic`) and Gemini (`/gemini`), and its per-request
scenarios inject HTTP errors and stream faults (truncate, disconnect, malformed).
"""

from __future__ import annotations

from typing import Any

import pytest
from chatcore import errors
from chatcore.events import Finish, ProviderEvent, ResponseInfo, TextDelta, UsageReport
from chatcore.messages import Message, ModelRequest
from chatcore.providers.anthropic import AnthropicProvider
from chatcore.providers.gemini import GeminiProvider
from chatcore.providers.openai import OpenAIProvider

from .conftest import LLMock

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}


def _provider(kind: str, base_url: str) -> Any:
    if kind == "openai":
        return OpenAIProvider(api_key="sk-test", base_url=f"{base_url}/v1")
    if kind == "anthropic":
        return AnthropicProvider(api_key="sk-ant-test", base_url=f"{base_url}/anthropic")
    return GeminiProvider(api_key="AIza-test", base_url=f"{base_url}/gemini")


def _request(kind: str, text: str = "hello there") -> ModelRequest:
    return ModelRequest(model=MODELS[kind], messages=(Message("user", text),), max_output_tokens=200)


async def _collect(provider: Any, request: ModelRequest) -> list[ProviderEvent]:
    return [event async for event in provider.stream(request)]


@pytest.mark.parametrize("kind", sorted(MODELS))
async def test_stream_completes(llmock: LLMock, kind: str) -> None:
    llmock.script()
    events = await _collect(_provider(kind, llmock.base_url), _request(kind))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text.strip() and MODELS[kind] in text  # llmock names the model in its templated reply
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert any(isinstance(e, ResponseInfo) and e.model for e in events)
    usage = [e.usage for e in events if isinstance(e, UsageReport)]
    assert usage and usage[-1].output_tokens and usage[-1].output_tokens > 0


@pytest.mark.parametrize(("kind", "status", "cls"), [
    ("openai", 429, errors.RateLimitedError),
    ("anthropic", 429, errors.RateLimitedError),
    ("gemini", 429, errors.RateLimitedError),
    ("anthropic", 529, errors.OverloadedError),
    ("openai", 503, errors.OverloadedError),
    ("gemini", 500, errors.ServerError),
    ("openai", 401, errors.AuthenticationError),
])
async def test_http_faults_are_classified(llmock: LLMock, kind: str, status: int, cls: type) -> None:
    llmock.script({"type": "fail", "status": status})
    with pytest.raises(errors.ProviderError) as info:
        await _collect(_provider(kind, llmock.base_url), _request(kind))
    assert type(info.value) is cls
    assert info.value.http_status == status
    assert info.value.retryable is cls.retryable
    if status == 429:
        assert info.value.retry_after == 1.0  # llmock sends retry-after-ms: 1000 (and retry-after: 1)


@pytest.mark.parametrize("kind", sorted(MODELS))
async def test_truncated_stream_is_an_error(llmock: LLMock, kind: str) -> None:
    """llmock's `truncate` ends the body cleanly but early: it must not pass for a finished answer."""
    llmock.script({"type": "stream_fault", "kind": "truncate", "after_chunks": 3})
    events: list[ProviderEvent] = []
    with pytest.raises(errors.TruncatedStreamError) as info:
        async for event in _provider(kind, llmock.base_url).stream(_request(kind)):
            events.append(event)
    assert not any(isinstance(e, Finish) for e in events)
    assert info.value.retryable


@pytest.mark.parametrize("kind", sorted(MODELS))
async def test_disconnect_mid_stream_is_an_error(llmock: LLMock, kind: str) -> None:
    llmock.script({"type": "stream_fault", "kind": "disconnect", "after_chunks": 2})
    with pytest.raises((errors.TruncatedStreamError, errors.NetworkError)):
        await _collect(_provider(kind, llmock.base_url), _request(kind))


@pytest.mark.parametrize("kind", sorted(MODELS))
async def test_malformed_chunk_is_an_error(llmock: LLMock, kind: str) -> None:
    llmock.script({"type": "stream_fault", "kind": "malformed", "after_chunks": 2})
    with pytest.raises(errors.InStreamError) as info:
        await _collect(_provider(kind, llmock.base_url), _request(kind))
    assert info.value.http_status == 200


async def test_recovers_after_a_scripted_failure(llmock: LLMock) -> None:
    """A one-shot fault affects one request only; the pooled connection keeps working."""
    provider = _provider("openai", llmock.base_url)
    llmock.script({"type": "fail", "status": 500})
    with pytest.raises(errors.ServerError):
        await _collect(provider, _request("openai"))
    events = await _collect(provider, _request("openai"))
    assert isinstance(events[-1], Finish)
