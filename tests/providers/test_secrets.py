"""API keys from SSM Parameter Store and Secrets Manager (moto), fetched lazily and once."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import httpx
import pytest
from aws_lambda_powertools.utilities import parameters
from chatcore import errors, secrets
from chatcore.messages import Message, ModelRequest
from chatcore.providers import ProviderRegistry
from chatcore.settings import Settings
from moto import mock_aws

from .conftest import fixture_bytes, fixture_json


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    secrets.clear_cache()
    parameters.clear_caches()  # Powertools caches its boto3 clients and values module-wide
    with mock_aws():
        yield
    secrets.clear_cache()
    parameters.clear_caches()


def test_ssm_secure_string(aws: None) -> None:
    boto3.client("ssm").put_parameter(Name="/chat/openai", Value="sk-from-ssm", Type="SecureString")
    getter = secrets.api_key_getter(Settings(secret_names={"openai": "ssm:/chat/openai"}), "openai", None)
    assert getter is not None and getter() == "sk-from-ssm"


def test_secrets_manager_plain_and_json(aws: None) -> None:
    client = boto3.client("secretsmanager")
    client.create_secret(Name="chat/anthropic", SecretString="sk-ant-plain\n")
    client.create_secret(Name="chat/gemini", SecretString='{"api_key": "AIza-from-json"}')
    settings = Settings(secret_names={"anthropic": "chat/anthropic", "gemini": "secretsmanager:chat/gemini"})
    assert secrets.api_key_getter(settings, "anthropic", None)() == "sk-ant-plain"  # type: ignore[misc]
    assert secrets.api_key_getter(settings, "gemini", None)() == "AIza-from-json"  # type: ignore[misc]


def test_fetched_once_per_cold_start(aws: None) -> None:
    client = boto3.client("secretsmanager")
    client.create_secret(Name="chat/openai", SecretString="first")
    getter = secrets.api_key_getter(Settings(secret_names={"openai": "chat/openai"}), "openai", None)
    assert getter is not None and getter() == "first"
    client.put_secret_value(SecretId="chat/openai", SecretString="rotated")
    assert getter() == "first"  # served from memory: no call per request
    secrets.clear_cache()
    parameters.clear_caches()
    assert getter() == "rotated"  # a new cold start reads it again


def test_direct_key_wins_and_absent_means_disabled() -> None:
    settings = Settings(secret_names={"openai": "chat/openai"})
    assert secrets.api_key_getter(settings, "openai", "sk-direct")() == "sk-direct"  # type: ignore[misc]
    assert secrets.api_key_getter(Settings(), "anthropic", None) is None


def test_missing_secret_is_a_provider_error_without_details(aws: None) -> None:
    getter = secrets.api_key_getter(Settings(secret_names={"openai": "chat/absent"}), "openai", None)
    with pytest.raises(errors.ProviderError) as info:
        getter()  # type: ignore[misc]
    assert info.value.provider == "openai" and "chat/absent" not in info.value.message


async def test_key_is_fetched_on_first_request_not_at_startup(aws: None) -> None:
    """The registry builds the provider without touching AWS; the first request reads the secret."""
    registry = ProviderRegistry(Settings(secret_names={"anthropic": "ssm:/chat/anthropic"}))
    provider = registry.get("anthropic")  # the parameter does not exist yet: nothing was fetched
    boto3.client("ssm").put_parameter(Name="/chat/anthropic", Value="sk-ant-lazy", Type="SecureString")
    seen: list[httpx.Request] = []
    meta = fixture_json("anthropic/messages_stream_text.meta.json")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers=meta["headers"], content=fixture_bytes("anthropic/messages_stream_text.sse"))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider._http_client = client  # type: ignore[attr-defined]
        request = ModelRequest(model="claude-sonnet-4-5", messages=(Message("user", "hi"),))
        events = [event async for event in provider.stream(request)]
    assert events and seen[0].headers["x-api-key"] == "sk-ant-lazy"
