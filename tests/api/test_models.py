"""`GET /v1/models`: the registry's names and the mock behaviours, in OpenAI's list format."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import httpx
from chatcore import errors
from chatcore.api.app import create_app, default_components
from chatcore.auth import Principal
from starlette.requests import HTTPConnection

from tests.conftest import settings_for_tests

REGISTRY = {
    "deployments": {
        "mock-small": {"provider": "mock", "model": "echo", "tier": "fast"},
        "openai-big": {"provider": "openai", "model": "gpt-4.1", "tier": "premium"},
    },
    "aliases": {"default": ["openai-big", "mock-small"], "cloud-only": ["openai-big"]},
}


def test_lists_aliases_tiers_deployments_and_mock_models(chat_server: Callable[..., str]) -> None:
    base = chat_server(model_registry_json=json.dumps(REGISTRY))
    response = httpx.get(f"{base}/v1/models", timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert all(m["object"] == "model" and isinstance(m["owned_by"], str) for m in body["data"])
    # Aliases first, then the tiers that no alias shadows, then deployments, then the mock behaviours.
    kinds = [m["kind"] for m in body["data"]]
    assert kinds == sorted(kinds, key=["alias", "tier", "deployment", "mock"].index)
    assert by_id["default"]["chain"] == ["openai-big", "mock-small"] and by_id["default"]["available"]
    # No OpenAI key in the test settings: a chain of only OpenAI deployments is not available.
    assert by_id["cloud-only"]["available"] is False
    assert by_id["fast"]["kind"] == "tier" and by_id["fast"]["chain"] == ["mock-small"]
    assert by_id["premium"]["available"] is False
    assert by_id["mock-small"] == {**by_id["mock-small"], "kind": "deployment", "owned_by": "mock", "tier": "fast",
                                   "model": "mock/echo", "available": True}
    assert by_id["openai-big"]["available"] is False
    assert by_id["mock/echo"]["owned_by"] == "mock" and "mock/fail-429" in by_id


def test_every_listed_name_is_accepted_by_the_chat_endpoint(chat_server: Callable[..., str]) -> None:
    base = chat_server(model_registry_json=json.dumps(REGISTRY))
    names = [m["id"] for m in httpx.get(f"{base}/v1/models", timeout=30).json()["data"] if m["available"]]
    assert "mock/echo" in names and "fast" in names
    for name in ("fast", "mock-small", "mock/echo"):
        response = httpx.post(f"{base}/api/chat/sse", timeout=30, json={
            "model": name, "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200, (name, response.text)


class RefuseEveryone:
    async def authenticate(self, request: HTTPConnection) -> Principal:
        raise errors.UnauthorizedError("no credentials")


def test_the_list_needs_the_same_credentials_as_chat(serve_asgi: Callable[..., str]) -> None:
    settings = settings_for_tests()
    components = dataclasses.replace(default_components(settings), authenticator=RefuseEveryone())
    base = serve_asgi(create_app(components=components))
    response = httpx.get(f"{base}/v1/models", timeout=30)
    assert response.status_code == 401 and response.json()["error"]["message"] == "no credentials"
