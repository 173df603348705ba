"""Every recorded stream, fed to its adapter's parser split at every byte offset and byte by byte,
and through each adapter's full `stream()` (httpx MockTransport, or boto3 with botocore's parser).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from chatcore import errors
from chatcore.messages import Message, ModelRequest
from chatcore.providers.anthropic import AnthropicProvider
from chatcore.providers.bedrock import BedrockProvider
from chatcore.providers.gemini import GeminiProvider
from chatcore.providers.ollama import OllamaProvider
from chatcore.providers.openai import OpenAIProvider
from chatcore.providers.streaming import parse_all

from .bedrock_stub import bedrock_client_replaying
from .conftest import (
    EXPECTED,
    PARSERS,
    STREAM_FIXTURES,
    adapter_of,
    check_against_expected,
    fixture_bytes,
    fixture_json,
    summarize,
)


def _parse(name: str, chunks: list[bytes]):
    events, error = parse_all(PARSERS[adapter_of(name)](), chunks)
    return summarize(events, error)


@pytest.mark.parametrize("name", STREAM_FIXTURES)
def test_whole_body_matches_expected(name: str) -> None:
    outcome = _parse(name, [fixture_bytes(name)])
    check_against_expected(name, outcome)
    if adapter_of(name) in ("openai", "anthropic", "gemini"):
        ids = [i for i in outcome.response_ids if i]
        assert ids and ids[0].encode() in fixture_bytes(name), "the provider's response id is reported"


@pytest.mark.parametrize("name", STREAM_FIXTURES)
def test_split_in_two_at_every_offset(name: str) -> None:
    data = fixture_bytes(name)
    reference = _parse(name, [data])
    for offset in range(len(data) + 1):
        outcome = _parse(name, [data[:offset], data[offset:]])
        assert outcome == reference, f"{name} split at byte {offset}"


@pytest.mark.parametrize("name", STREAM_FIXTURES)
def test_one_byte_at_a_time(name: str) -> None:
    data = fixture_bytes(name)
    outcome = _parse(name, [data[i:i + 1] for i in range(len(data))])
    check_against_expected(name, outcome)


@pytest.mark.parametrize("name", [n for n in STREAM_FIXTURES if EXPECTED[n]["outcome"] != "error"])
def test_cut_anywhere_is_never_a_success(name: str) -> None:
    """A body cut before its last byte of content must raise `TruncatedStreamError`, never finish."""
    data = fixture_bytes(name)
    content_end = len(data.rstrip())
    step = max(1, content_end // 200)  # a dense sample of cut points; each one re-parses the prefix
    for cut in [*range(0, content_end, step), content_end - 1]:
        outcome = _parse(name, [data[:cut]])
        assert outcome.finish is None, f"{name} cut at {cut} finished"
        assert outcome.error is not None and outcome.error[0] is errors.TruncatedStreamError, (
            f"{name} cut at {cut}: {outcome.error}")


# ------------------------------------------------------------------ full stream() per fixture

REQUEST = ModelRequest(model="test-model", messages=(Message("user", "Say hello in French and Chinese."),),
                       max_output_tokens=1024)


def _sliced(data: bytes, size: int = 7) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


async def _aiter(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _provider_with_body(adapter: str, status: int, headers: dict[str, str], body: bytes,
                        seen: list[httpx.Request] | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, headers=headers, content=_aiter(_sliced(body)))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    if adapter == "openai":
        return OpenAIProvider(api_key="sk-test-key-123456", http_client=client), client
    if adapter == "anthropic":
        return AnthropicProvider(api_key="sk-ant-test-123456", http_client=client), client
    if adapter == "gemini":
        return GeminiProvider(api_key="AIzaTestKey1234567890", http_client=client), client
    return OllamaProvider(base_url="http://127.0.0.1:11434", http_client=client), client


async def _run(provider, request: ModelRequest = REQUEST):
    events = []
    try:
        async for event in provider.stream(request):
            events.append(event)
    except errors.ProviderError as exc:
        return summarize(events, exc)
    return summarize(events, None)


@pytest.mark.parametrize("name", STREAM_FIXTURES)
async def test_adapter_stream_end_to_end(name: str) -> None:
    adapter = adapter_of(name)
    meta = fixture_json(EXPECTED[name]["meta"])
    body = fixture_bytes(name)
    if adapter == "bedrock":
        client = bedrock_client_replaying(meta["status"], meta["headers"], body)
        outcome = await _run(BedrockProvider(region="us-east-1", runtime_client=client))
        check_against_expected(name, outcome)
        assert outcome.response_ids == (meta["headers"]["x-amzn-requestid"],)
        return
    provider, client = _provider_with_body(adapter, meta["status"], meta["headers"], body)
    async with client:
        outcome = await _run(provider)
    check_against_expected(name, outcome)
    # The transport path must agree exactly with the pure parser.
    assert outcome == _parse(name, [body])
