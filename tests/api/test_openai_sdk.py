"""The OpenAI-compatible API judged by the official `openai` Python SDK (pinned in pyproject.toml),
against the app in a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from chatcore import errors
from chatcore.api.app import create_app, default_components
from chatcore.auth import Principal
from chatcore.providers import ProviderRegistry
from chatcore.providers.mock import tokenize
from starlette.requests import HTTPConnection

from tests.capturing_provider import CapturingProvider
from tests.conftest import settings_for_tests

USER = [{"role": "user", "content": "hello there"}]


def client_for(url: str, api_key: str = "sk-local") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=60)


@pytest.fixture
def sdk(chat_server: Callable[..., str]) -> openai.OpenAI:
    return client_for(chat_server(allow_client_system_prompt=True))


def test_streaming_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model="mock/echo", messages=USER, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    expected = "You said: hello there"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == len(tokenize(expected))
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == len(tokenize(expected))
    assert last.usage.prompt_tokens >= 1
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {"mock/echo"}


def test_streaming_without_include_usage_has_no_usage_chunk(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="mock/echo", messages=USER, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_non_streaming_completion(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="mock/echo", max_completion_tokens=100, temperature=0.2, top_p=0.9, seed=7, stop=["\n\n"], user="u-1",
        messages=[{"role": "developer", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "first "}, {"type": "text", "text": "part"}]},
                  {"role": "assistant", "content": "ok"},
                  {"role": "user", "content": "second"}])
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "You said: second"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == len(tokenize("You said: second"))


def test_max_tokens_ends_with_length(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="mock/lorem", max_tokens=3, messages=USER)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_reasoning_is_reported_in_usage_and_streamed_apart(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="mock/reason?text=42.", messages=USER, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in chunks
                        if c.choices)
    assert text == "42." and reasoning == "Thinking about the question step by step."


def test_response_headers_name_the_deployment_and_fallbacks(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="demo-fallback", messages=USER)
    assert raw.headers["x-request-id"]
    assert raw.headers["x-chat-deployment"] == "mock-fast"
    assert raw.headers["x-chat-fallbacks"].startswith("mock-fail-529:")
    completion = raw.parse()
    assert completion.choices[0].message.content == "You said: hello there"
    extras = completion.model_extra or {}
    assert extras["x_chat"]["deployment"] == "mock-fast"
    assert extras["x_chat"]["fallbacks"][0]["deployment"] == "mock-fail-529"


def test_a_mid_stream_failure_raises_in_the_iterator(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model="mock/fail-after-3?text=alpha beta gamma delta", messages=USER,
                                         stream=True, stream_options={"include_usage": True})
    seen: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            assert not (chunk.choices and chunk.choices[0].finish_reason), "a failed stream must not finish"
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(seen) == "alpha beta gamma "
    assert caught.value.message == "The mock provider failed mid-stream."
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "provider_stream_error"


def test_a_mid_stream_failure_without_streaming_is_an_upstream_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="mock/fail-after-3", messages=USER)
    assert caught.value.status_code == 503  # retryable upstream failure
    assert caught.value.code == "provider_stream_error"


@pytest.mark.parametrize(("model", "exception", "status", "code"), [
    ("mock/fail-429", openai.RateLimitError, 429, "provider_rate_limited"),
    ("mock/fail-quota", openai.RateLimitError, 429, "provider_quota_exhausted"),
    ("gpt-9-ultra", openai.NotFoundError, 404, "model_not_found"),
    ("nope/x", openai.NotFoundError, 404, "model_not_found"),
    ("mock/no-such-behaviour", openai.NotFoundError, 404, "model_not_found"),
    ("mock/fail-context", openai.APIStatusError, 413, "context_too_long"),
    ("mock/fail-400", openai.BadRequestError, 400, "provider_bad_request"),
    # The provider refused the backend's own key: an upstream failure, not the caller's credentials.
    ("mock/fail-401", openai.InternalServerError, 502, "provider_authentication"),
    ("mock/fail-500", openai.InternalServerError, 503, "provider_server_error"),
])
def test_errors_map_to_the_sdk_exception_types(sdk: openai.OpenAI, model: str, exception: type[Exception],
                                               status: int, code: str) -> None:
    with pytest.raises(exception) as caught:
        sdk.chat.completions.create(model=model, messages=USER)
    error = caught.value
    assert isinstance(error, openai.APIStatusError)
    assert error.status_code == status and error.code == code
    assert isinstance(error.body, dict) and set(error.body) == {"message", "type", "param", "code"}
    assert error.body["message"]
    if code == "provider_rate_limited":  # a quota that waiting will not clear has no Retry-After
        assert int(error.response.headers["retry-after"]) >= 1
    if status == 404:
        assert error.body["param"] == "model" and error.body["type"] == "invalid_request_error"


def test_a_streamed_request_that_fails_before_the_first_token_is_an_http_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="mock/fail-429", messages=USER, stream=True)


@pytest.mark.parametrize(("extra", "param"), [
    ({"temperature": "hot"}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"n": 2}, "n"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
])
def test_wrong_types_are_a_400_naming_the_field(sdk: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    body = {"messages": USER, **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="mock/echo", **body)
    assert isinstance(caught.value.body, dict)
    assert str(caught.value.body["param"]).startswith(param)


def test_unknown_fields_are_ignored(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="mock/echo", messages=USER,
                                             extra_body={"frequency_penalty": 0.5, "whatever": {"x": 1}})
    assert completion.choices[0].message.content == "You said: hello there"


def test_json_output_from_a_provider_that_cannot_is_a_400(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="mock/echo", messages=USER, response_format={"type": "json_object"})
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "response_format"
    text = sdk.chat.completions.create(model="mock/echo", messages=USER, response_format={"type": "text"})
    assert text.choices[0].message.content == "You said: hello there"


def test_image_parts_are_refused(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="mock/echo", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])


def test_a_client_system_prompt_follows_the_operator_setting(chat_server: Callable[..., str]) -> None:
    strict = client_for(chat_server())  # ALLOW_CLIENT_SYSTEM_PROMPT=false
    with pytest.raises(openai.BadRequestError):
        strict.chat.completions.create(model="mock/echo",
                                       messages=[{"role": "system", "content": "You are a pirate."}, *USER])


def test_an_oversized_body_is_a_413_in_openai_shape(chat_server: Callable[..., str]) -> None:
    sdk = client_for(chat_server(max_body_bytes=2_000))
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="mock/echo", messages=[{"role": "user", "content": "x" * 5_000}])
    assert caught.value.status_code == 413
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "invalid_request_error"


def test_models_lists_deployments_aliases_tiers_and_mock_models(sdk: openai.OpenAI) -> None:
    models = {m.id: m for m in sdk.models.list()}
    assert {"fast", "standard", "premium", "default", "demo-fallback", "mock-fast", "mock/echo",
            "mock/fail-after-5"} <= set(models)
    assert models["mock/echo"].owned_by == "mock" and models["mock/echo"].object == "model"
    assert models["openai-gpt-4o"].available is False  # listed, but its provider is not configured here
    for name in ("fast", "mock-fast", "mock/lorem"):  # every listed name is accepted by the chat endpoint
        assert sdk.chat.completions.create(model=name, messages=USER).choices[0].message.content


class _DenyAuthenticator:
    """401 without `authorization`, 403 for the key `sk-blocked`, else the key's owner."""

    async def authenticate(self, request: HTTPConnection) -> Principal:
        header = request.headers.get("authorization", "")
        if not header:
            raise errors.UnauthorizedError("Missing API key.")
        if header == "Bearer sk-blocked":
            raise errors.ForbiddenError("This key may not use the chat API.")
        if header != "Bearer sk-good":
            raise errors.InvalidCredentialsError("Invalid API key.")
        return Principal(user_id="key-owner", method="api_key")


def test_the_api_key_works_as_a_bearer_token_and_auth_errors_map(serve_asgi: Callable[..., str]) -> None:
    settings = settings_for_tests()
    components = default_components(settings, ProviderRegistry(settings))
    components.authenticator = _DenyAuthenticator()
    url = serve_asgi(create_app(components=components))
    good = client_for(url, api_key="sk-good")
    assert good.chat.completions.create(model="mock/echo", messages=USER).choices[0].message.content
    assert good.models.list().data
    with pytest.raises(openai.AuthenticationError) as caught:
        client_for(url, api_key="sk-wrong").chat.completions.create(model="mock/echo", messages=USER)
    assert caught.value.response.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(openai.PermissionDeniedError):
        client_for(url, api_key="sk-blocked").chat.completions.create(model="mock/echo", messages=USER)
    with pytest.raises(openai.AuthenticationError):
        client_for(url, api_key="sk-wrong").models.list()
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": "mock/echo", "messages": USER})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


def test_unknown_paths_under_v1_answer_in_openai_shape(chat_server: Callable[..., str]) -> None:
    url = chat_server()
    response = httpx.post(f"{url}/v1/embeddings", json={"input": "x"})
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    legacy = httpx.post(f"{url}/api/chat", json={"model": "gpt-9-ultra", "messages": USER})
    assert legacy.status_code == 400 and legacy.json()["error"]["code"] == "bad_request"  # /api/chat is unchanged


def test_sampling_fields_reach_the_provider(chat_server: Callable[..., str]) -> None:
    capture = CapturingProvider()
    sdk = client_for(chat_server(providers={"capture": capture}, allow_client_system_prompt=True))
    sdk.chat.completions.create(
        model="capture/echo", temperature=0.3, top_p=0.8, seed=11, stop="STOP", max_tokens=64,
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}])
    [request] = capture.requests
    assert (request.temperature, request.top_p, request.seed, request.stop) == (0.3, 0.8, 11, ("STOP",))
    assert request.max_output_tokens == 64 and request.system == "Be terse."
    assert [(m.role, m.content) for m in request.messages] == [("user", "hi"), ("assistant", "hello"),
                                                               ("user", "again")]
    sdk.chat.completions.create(model="capture/echo", messages=USER, response_format={"type": "text"})
    assert capture.requests[-1].response_format == {"type": "text"}
