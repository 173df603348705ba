"""Health probes: each adapter's cheap, unbilled call, against the recorded responses."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from chatcore.providers.anthropic import AnthropicProvider
from chatcore.providers.bedrock import BedrockProvider
from chatcore.providers.gemini import GeminiProvider
from chatcore.providers.ollama import OllamaProvider
from chatcore.providers.openai import OpenAIProvider

from .bedrock_stub import bedrock_client_replaying
from .conftest import fixture_json

CASES = [
    ("openai/models_list.response.json", lambda c: OpenAIProvider(api_key="sk-k", http_client=c),
     "/v1/models", "authorization"),
    ("anthropic/models_list.response.json", lambda c: AnthropicProvider(api_key="sk-ant", http_client=c),
     "/v1/models", "x-api-key"),
    ("gemini/models_list.response.json", lambda c: GeminiProvider(api_key="AIza-k", http_client=c),
     "/v1beta/models", "x-goog-api-key"),
    ("ollama/version.response.json", lambda c: OllamaProvider(http_client=c), "/api/version", None),
]


@pytest.mark.parametrize(("fixture", "make", "path", "auth_header"), CASES)
async def test_probe_up(fixture: str, make: Any, path: str, auth_header: str | None) -> None:
    recorded = fixture_json(fixture)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(recorded["status"], headers=recorded["headers"], content=recorded["body"].encode())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        result = await make(client).probe(timeout=2.0)
    assert result.status == "up" and result.latency_ms >= 0
    assert seen[0].method == "GET" and seen[0].url.path == path
    if auth_header:
        assert auth_header in seen[0].headers


@pytest.mark.parametrize(("fixture", "make", "path", "auth_header"), CASES)
async def test_probe_down_on_error_status(fixture: str, make: Any, path: str, auth_header: str | None) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(401))) as client:
        result = await make(client).probe(timeout=2.0)
    assert result.status == "down" and result.detail == "HTTP 401"


async def test_probe_down_when_unreachable() -> None:
    result = await OllamaProvider(base_url="http://127.0.0.1:9").probe(timeout=2.0)
    assert result.status == "down" and result.detail


async def test_bedrock_probe_uses_the_control_plane() -> None:
    recorded = fixture_json("bedrock/list_foundation_models.response.json")
    control = bedrock_client_replaying(recorded["status"], recorded["headers"], recorded["body"].encode(),
                                       service="bedrock", operation="ListFoundationModels")
    result = await BedrockProvider(region="us-east-1", control_client=control).probe(timeout=2.0)
    assert result.status == "up"


async def test_bedrock_probe_down_on_access_denied() -> None:
    control = bedrock_client_replaying(
        403, {"x-amzn-errortype": "AccessDeniedException:http://internal.amazon.com/"},
        b'{"message":"not allowed"}', service="bedrock", operation="ListFoundationModels")
    result = await BedrockProvider(region="us-east-1", control_client=control).probe(timeout=2.0)
    assert result.status == "down" and result.detail == "AccessDeniedException"
