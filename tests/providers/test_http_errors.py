"""Every recorded HTTP error response, through each adapter's real HTTP path, classified exactly."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest
from chatcore import errors
from chatcore.messages import Message, ModelRequest
from chatcore.providers import http
from chatcore.providers.bedrock import BedrockProvider

from .bedrock_stub import bedrock_client_replaying
from .conftest import EXPECTED, HTTP_ERROR_FIXTURES, adapter_of, fixture_json
from .test_fixture_streams import _provider_with_body

# The class each recorded error must map to (what routing and fallback branch on).
EXPECTED_CLASS: dict[str, type[errors.ProviderError]] = {
    "openai/http_400_context_length_exceeded.http.json": errors.ContextTooLongError,
    "openai/http_401_invalid_api_key.http.json": errors.AuthenticationError,
    "openai/http_404_model_not_found.http.json": errors.ModelNotFoundError,
    "openai/http_429_rate_limit.http.json": errors.RateLimitedError,
    "openai/http_429_insufficient_quota.http.json": errors.QuotaExhaustedError,
    "openai/http_500_server_error.http.json": errors.ServerError,
    "openai/http_503_overloaded.http.json": errors.OverloadedError,
    "anthropic/http_400_invalid_request.http.json": errors.BadRequestError,
    "anthropic/http_401_authentication.http.json": errors.AuthenticationError,
    "anthropic/http_404_not_found.http.json": errors.ModelNotFoundError,
    "anthropic/http_413_request_too_large.http.json": errors.ContextTooLongError,
    "anthropic/http_429_rate_limit.http.json": errors.RateLimitedError,
    "anthropic/http_500_api_error.http.json": errors.ServerError,
    "anthropic/http_529_overloaded.http.json": errors.OverloadedError,
    "gemini/http_400_api_key_invalid.http.json": errors.AuthenticationError,
    "gemini/http_403_permission_denied.http.json": errors.PermissionDeniedError,
    "gemini/http_404_model_not_found.http.json": errors.ModelNotFoundError,
    "gemini/http_429_resource_exhausted.http.json": errors.RateLimitedError,
    "gemini/http_500_internal.http.json": errors.ServerError,
    "gemini/http_503_unavailable.http.json": errors.OverloadedError,
    "bedrock/http_400_ValidationException.http.json": errors.BadRequestError,
    "bedrock/http_403_AccessDeniedException.http.json": errors.PermissionDeniedError,
    "bedrock/http_404_ResourceNotFoundException.http.json": errors.ModelNotFoundError,
    "bedrock/http_408_ModelTimeoutException.http.json": errors.ProviderTimeoutError,
    "bedrock/http_429_ThrottlingException.http.json": errors.RateLimitedError,
    "bedrock/http_500_InternalServerException.http.json": errors.ServerError,
    "bedrock/http_503_ServiceUnavailableException.http.json": errors.OverloadedError,
    "ollama/http_400_bad_request.http.json": errors.BadRequestError,
    "ollama/http_404_model_not_found.http.json": errors.ModelNotFoundError,
    "ollama/http_500_runner_terminated.http.json": errors.ServerError,
    "ollama/http_503_server_busy.http.json": errors.OverloadedError,
}

REQUEST = ModelRequest(model="test-model", messages=(Message("user", "hi"),))


def test_every_error_fixture_has_an_expected_class() -> None:
    assert set(EXPECTED_CLASS) == set(HTTP_ERROR_FIXTURES)


async def _error_of(name: str) -> errors.ProviderError:
    side = fixture_json(name)
    adapter = adapter_of(name)
    if adapter == "bedrock":
        client = bedrock_client_replaying(side["status"], side["headers"], side["body"].encode())
        provider = BedrockProvider(region="us-east-1", runtime_client=client)
        with pytest.raises(errors.ProviderError) as info:
            async for _ in provider.stream(REQUEST):
                pass
        return info.value
    provider, client = _provider_with_body(adapter, side["status"], side["headers"], side["body"].encode())
    async with client:
        with pytest.raises(errors.ProviderError) as info:
            async for _ in provider.stream(REQUEST):
                pass
    return info.value


@pytest.mark.parametrize("name", HTTP_ERROR_FIXTURES)
async def test_http_error_is_classified(name: str) -> None:
    exp = EXPECTED[name]
    error = await _error_of(name)
    assert type(error) is EXPECTED_CLASS[name]
    assert error.http_status == exp["status"]
    assert error.retryable is exp["retryable"]
    assert error.retry_after == exp.get("retry_after_seconds")
    assert error.provider == adapter_of(name)
    assert error.model == "test-model"
    assert error.message and len(error.message) <= 300
    body = error.public_body()
    assert body["error"]["code"] == error.code


async def test_openai_key_echoed_in_an_error_is_redacted() -> None:
    """OpenAI quotes part of a bad key back; whatever looks like a key never reaches the client."""
    body = b'{"error":{"message":"Incorrect API key provided: sk-proj-abcdefghijklmnop1234.","code":"invalid_api_key"}}'
    provider, client = _provider_with_body("openai", 401, {"content-type": "application/json"}, body)
    async with client:
        with pytest.raises(errors.AuthenticationError) as info:
            async for _ in provider.stream(REQUEST):
                pass
    assert "sk-proj-abcdefghijklmnop1234" not in info.value.message
    assert "[redacted]" in info.value.message


async def test_html_proxy_error_is_a_server_error_without_the_page() -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    provider, client = _provider_with_body("openai", 502, {"content-type": "text/html"}, page)
    async with client:
        with pytest.raises(errors.ServerError) as info:
            async for _ in provider.stream(REQUEST):
                pass
    assert "<html>" not in info.value.message and info.value.retryable


async def test_anthropic_spend_limit_429_is_final() -> None:
    body = (b'{"type":"error","error":{"type":"rate_limit_error","message":"spend limit reached",'
            b'"details":{"error_code":"enforced_spend_limit_reached"}}}')
    provider, client = _provider_with_body("anthropic", 429, {"x-should-retry": "true", "retry-after": "5"}, body)
    async with client:
        with pytest.raises(errors.QuotaExhaustedError) as info:
            async for _ in provider.stream(REQUEST):
                pass
    assert info.value.retryable is False


async def test_connection_refused_is_a_network_error() -> None:
    from chatcore.providers.openai import OpenAIProvider

    provider = OpenAIProvider(api_key="k", base_url="http://127.0.0.1:9/v1")  # discard port: nothing listens
    with pytest.raises(errors.NetworkError) as info:
        async for _ in provider.stream(REQUEST):
            pass
    assert info.value.retryable and "127.0.0.1" not in info.value.message


def test_retry_after_forms() -> None:
    assert http.parse_retry_after({"retry-after-ms": "1450", "retry-after": "2"}) == 1.45
    assert http.parse_retry_after({"retry-after": "18"}) == 18.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert http.parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30, abs=1)
    assert http.parse_retry_after({"retry-after": "soon"}) is None
    assert http.parse_retry_after({}) is None
    assert http.parse_duration("41s") == 41.0 and http.parse_duration("0.5s") == 0.5
    assert http.parse_duration("41") is None


def test_quota_is_decided_by_code_not_message() -> None:
    """A transient 429 whose message mentions billing stays retryable."""
    assert http.classify_status(429, code="rate_limit_exceeded", message="see billing") is errors.RateLimitedError
    assert http.classify_status(429, code="insufficient_quota") is errors.QuotaExhaustedError
    assert http.classify_status(400, message="prompt is too long: 201000 tokens") is errors.ContextTooLongError


def test_errors_never_leak_keys_through_repr_or_str() -> None:
    err = errors.AuthenticationError(errors.safe_message("bad key=AIzaSyABCDEFGHIJKLMNOP and Bearer sk-abcdefgh123"),
                                     provider="gemini")
    assert "AIza" not in str(err) and "sk-abcdefgh123" not in repr(err)


async def test_http_transport_is_pooled_per_loop() -> None:
    first = http.client_for("x")
    assert http.client_for("x") is first
    assert isinstance(first, httpx.AsyncClient)
    await first.aclose()
    assert http.client_for("x") is not first  # a closed client is replaced, not reused
