"""The health function: scheduled probes recorded in DynamoDB (moto) and honoured by the router in
another process; `GET /health` through the Function URL event and Mangum."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chatcore.dynamodb import dynamodb_client
from chatcore.events import Finish, Start
from chatcore.messages import Message
from chatcore.providers import ProviderRegistry
from chatcore.routing import CircuitBreaker, Router, build_registry
from chatcore.routing.breaker import DynamoBreakerStore
from chatcore.routing.turn import ChatTurn
from chatcore.settings import Settings, get_settings

from tests.moto_dynamodb import AWS_ENV, Table
from tests.routing.upstreams import LLMock

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
REGISTRY = {
    "deployments": {
        "remote": {"provider": "openai", "model": "gpt-4o-mini", "tier": "fast"},
        "local": {"provider": "mock", "model": "echo", "tier": "fast"},
    },
    "aliases": {"chain": ["remote", "local"]},
}


def event(name: str, shared_name: str) -> dict[str, Any]:
    """The repo's event file, or the shared fixture it is derived from (adjusted to GET /health)."""
    path = REPO / "events" / name
    if path.is_file():
        return json.loads(path.read_text())
    data = json.loads((SHARED / "fixtures" / "aws-events" / shared_name).read_text())
    if "requestContext" in data:
        data["rawPath"] = data["requestContext"]["http"]["path"] = "/health"
    return data


@pytest.fixture
def health_env(table: Table, llmock: LLMock, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Environment of a deployed health function: the table, an OpenAI upstream (llmock), the registry."""
    env = {**AWS_ENV, "TABLE_NAME": table.name, "DYNAMODB_ENDPOINT_URL": table.endpoint, "OPENAI_API_KEY": "sk-test-not-real",
           "OPENAI_BASE_URL": llmock.openai_base, "MODEL_REGISTRY_JSON": json.dumps(REGISTRY),
           "HEALTH_PROBE_TOKEN": "probe-secret-123", "POWERTOOLS_METRICS_NAMESPACE": "ChatBackend"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


def run_scheduled_probe(env: dict[str, str]) -> dict[str, Any]:
    """Invoke the handler with the scheduler event in a separate process, as another Lambda would."""
    script = (
        "import json, sys\n"
        "from devtools.function_modules import load_entry_module\n"
        "event = json.loads(sys.stdin.read())\n"
        "print('RESULT ' + json.dumps(load_entry_module('health').handler(event, None)))\n"
    )
    payload = json.dumps(event("health-schedule.json", "eventBridgeSchedulerEvent.json"))
    done = subprocess.run([sys.executable, "-c", script], input=payload, capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **env}, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    metrics = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"_aws"')]
    return {"result": json.loads(lines[-1][len("RESULT "):]), "metrics": metrics}


def test_probe_status_from_another_process_is_honoured_by_the_router(health_env: dict[str, str],
                                                                     llmock: LLMock) -> None:
    llmock.scenario({"type": "fail", "status": 503, "times": None, "match": {"path": "*/models"}})
    out = run_scheduled_probe(health_env)
    assert out["result"] == {"probed": 2, "providersDown": ["openai"]}
    down = [m for m in out["metrics"] if "ProvidersDown" in m]
    assert down and down[0]["ProvidersDown"] == [1.0] and down[0]["service"] == "health"
    latency = {m["provider"] for m in out["metrics"] if "ProbeLatency" in m}
    assert latency == {"openai", "mock"}
    assert len(llmock.requests("/models")) == 1  # each provider probed once

    async def route() -> list[Any]:
        settings = Settings(table_name=health_env["TABLE_NAME"], breaker_store="dynamodb", mock_ttft_ms=0,
                            mock_pace_ms=0, openai_api_key="sk-test-not-real", openai_base_url=llmock.openai_base)
        store = DynamoBreakerStore(settings.table_name,
                                   lambda: dynamodb_client("us-east-1", health_env["DYNAMODB_ENDPOINT_URL"]))
        router = Router(settings, ProviderRegistry(settings), registry=build_registry(REGISTRY),
                        breaker=CircuitBreaker(store))
        return [e async for e in router.stream(ChatTurn(model="chain", messages=(Message("user", "hi"),)))]

    events = asyncio.run(route())
    start = events[0]
    assert isinstance(start, Start) and start.deployment == "local"
    assert start.fallbacks == ("remote:circuit_open",)
    assert isinstance(events[-1], Finish)
    assert llmock.requests("/chat/completions") == []  # the down provider was never called


def health_handler() -> Any:
    from devtools.function_modules import load_entry_module

    module = load_entry_module("health")
    get_settings.cache_clear()
    module.service.cache_clear()
    module.http_handler.cache_clear()
    return module.handler


def get_health(query: str = "", authorization: str | None = None) -> tuple[int, dict[str, Any]]:
    request = copy.deepcopy(event("health-function-url.json", "lambdaFunctionUrlEvent.json"))
    request["rawQueryString"] = query
    if authorization:
        request["headers"]["authorization"] = authorization
    response = health_handler()(request, None)
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return response["statusCode"], json.loads(body)


def test_get_health_reports_stored_status_without_calling_providers(health_env: dict[str, str],
                                                                    llmock: LLMock) -> None:
    status, body = get_health()
    assert status == 200 and body["status"] == "healthy", body  # never probed: nothing known to be down
    assert body["providers"]["openai"]["status"] == "unknown"
    llmock.scenario({"type": "fail", "status": 500, "times": None, "match": {"path": "*/models"}})
    run_scheduled_probe(health_env)
    probes = len(llmock.requests("/models"))
    status, body = get_health()
    assert status == 200 and body["status"] == "degraded"
    assert body["providers"]["openai"]["status"] == "down" and body["providers"]["openai"]["lastProbe"]
    assert body["providers"]["mock"]["status"] == "up"
    assert body["deployments"]["remote"]["breaker"]["state"] == "open"
    assert body["deployments"]["remote"]["breaker"]["reason"] == "probe_down"
    assert len(llmock.requests("/models")) == probes  # GET /health read stored data only


def test_live_probe_needs_the_token_and_recovery_closes_the_probe_circuit(health_env: dict[str, str],
                                                                          llmock: LLMock) -> None:
    llmock.scenario({"type": "fail", "status": 500, "times": 1, "match": {"path": "*/models"}})
    run_scheduled_probe(health_env)
    assert get_health()[1]["status"] == "degraded"
    status, body = get_health("probe=true")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, _ = get_health("probe=true", "Bearer wrong")
    assert status == 401
    status, body = get_health("probe=true", "Bearer probe-secret-123")
    assert status == 200 and body["status"] == "healthy"
    assert body["deployments"]["remote"]["breaker"]["state"] == "closed"
    assert "probe-secret-123" not in json.dumps(body)


def test_everything_down_is_503(health_env: dict[str, str], llmock: LLMock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_JSON", json.dumps({"deployments": {"remote": REGISTRY["deployments"]["remote"]}}))
    llmock.scenario({"type": "fail", "status": 500, "times": None, "match": {"path": "*/models"}})
    run_scheduled_probe({**health_env, "MODEL_REGISTRY_JSON": os.environ["MODEL_REGISTRY_JSON"]})
    status, body = get_health()
    assert status == 503 and body["status"] == "down"


def test_probe_is_disabled_without_a_token(health_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEALTH_PROBE_TOKEN")
    status, body = get_health("probe=true", "Bearer anything")
    assert status == 403 and "HEALTH_PROBE_TOKEN_SECRET" in body["error"]["message"]


@pytest.mark.parametrize("stored_in", ["secretsmanager", "ssm"])
def test_probe_token_is_read_from_the_named_secret(health_env: dict[str, str], table: Table,
                                                   monkeypatch: pytest.MonkeyPatch, stored_in: str) -> None:
    """As deployed: the template passes HEALTH_PROBE_TOKEN_SECRET (a name), never the token itself."""
    import boto3
    from aws_lambda_powertools.utilities import parameters
    from chatcore import secrets

    endpoint = table.endpoint
    if stored_in == "ssm":
        boto3.client("ssm", endpoint_url=endpoint, region_name="us-east-1").put_parameter(
            Name="/chat/test/health-probe", Value="probe-from-ssm-789", Type="SecureString", Overwrite=True)
        name, token = "ssm:/chat/test/health-probe", "probe-from-ssm-789"
    else:
        client = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1")
        secret = f"chat/test/health-probe-{os.getpid()}-{id(monkeypatch)}"
        client.create_secret(Name=secret, SecretString="probe-from-secret-456")
        name, token = secret, "probe-from-secret-456"
    monkeypatch.delenv("HEALTH_PROBE_TOKEN")
    monkeypatch.setenv("HEALTH_PROBE_TOKEN_SECRET", name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", endpoint)
    secrets.clear_cache()
    parameters.clear_caches()  # Powertools keeps its boto3 clients module-wide
    try:
        status, body = get_health("probe=true", "Bearer probe-secret-123")  # the old environment token
        assert status == 401 and body["error"]["code"] == "unauthorized"
        status, body = get_health("probe=true", f"Bearer {token}")
        assert status == 200 and body["status"] in ("healthy", "degraded")
        assert token not in json.dumps(body)
    finally:
        secrets.clear_cache()
        parameters.clear_caches()


def test_probe_token_secret_that_cannot_be_read_is_a_503_not_an_open_door(
        health_env: dict[str, str], table: Table, monkeypatch: pytest.MonkeyPatch) -> None:
    from aws_lambda_powertools.utilities import parameters
    from chatcore import secrets

    monkeypatch.delenv("HEALTH_PROBE_TOKEN")
    monkeypatch.setenv("HEALTH_PROBE_TOKEN_SECRET", "chat/test/no-such-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", table.endpoint)
    secrets.clear_cache()
    parameters.clear_caches()
    try:
        status, body = get_health("probe=true", "Bearer anything")
        assert status == 503 and body["error"]["code"] == "service_unavailable"
        assert "chat/test/no-such-secret" not in json.dumps(body)
    finally:
        secrets.clear_cache()
        parameters.clear_caches()
