"""Cost control outside local use: the mock only where enabled, registry-only and priced models,
per-tier model allow-lists. Through a real uvicorn server."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from chatcore.providers.mock import MockProvider
from chatcore.settings import Settings

PROD = {"stage": "prod", "mock_provider": False, "allow_ad_hoc_models": False, "allow_unpriced_models": False}


def ask(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("model", ["mock/echo", "mock/lorem?tokens=12000000", "demo-fallback", "mock-fast"])
def test_the_mock_and_demo_aliases_are_unknown_models_in_production(chat_server: Callable[..., str],
                                                                    model: str) -> None:
    url = chat_server(**PROD)
    response = httpx.post(f"{url}/api/chat", json=ask(model), timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"


def test_mock_provider_true_enables_the_mock_outside_local(chat_server: Callable[..., str]) -> None:
    url = chat_server(**{**PROD, "mock_provider": True})
    assert httpx.post(f"{url}/api/chat", json=ask("demo-fallback"), timeout=30).status_code == 200


@pytest.mark.parametrize(("environment", "enabled"), [
    ({"STAGE": "local"}, True), ({"STAGE": "prod"}, False), ({"STAGE": "dev"}, False),
    ({"STAGE": "prod", "MOCK_PROVIDER": "true"}, True), ({}, True),
])
def test_the_mock_is_on_only_for_local_unless_enabled(monkeypatch: pytest.MonkeyPatch,
                                                      environment: dict[str, str], enabled: bool) -> None:
    for name in ("STAGE", "MOCK_PROVIDER", "ALLOW_AD_HOC_MODELS", "ALLOW_UNPRICED_MODELS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.mock_provider is enabled
    local = environment.get("STAGE", "local") == "local"
    assert settings.allow_ad_hoc_models is local and settings.allow_unpriced_models is local


def test_models_outside_the_registry_and_unpriced_ones_are_refused(chat_server: Callable[..., str]) -> None:
    registry = {"deployments": {"free-local": {"provider": "other", "model": "echo", "tier": "fast",
                                               "prices": {"input": 0, "output": 0}},
                                "unpriced": {"provider": "other", "model": "lorem", "tier": "premium"}},
                "aliases": {}}
    url = chat_server(**PROD, model_registry_json=json.dumps(registry),
                      providers={"other": MockProvider(ttft_ms=0, pace_ms=0)})
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/api/chat", json=ask("free-local")).status_code == 200  # priced at 0 explicitly
        unpriced = http.post("/api/chat", json=ask("unpriced"))
        assert unpriced.status_code == 400 and "no price" in unpriced.json()["error"]["message"]
        ad_hoc = http.post("/api/chat", json=ask("other/reason"))  # not a registered model
        assert ad_hoc.status_code == 400 and "not in the model registry" in ad_hoc.json()["error"]["message"]


def test_each_tier_uses_only_the_models_it_is_allowed(chat_server: Callable[..., str]) -> None:
    url = chat_server(model_access_json=json.dumps({"free": ["fast", "mock/e*"], "pro": ["*"]}))
    with httpx.Client(base_url=url, timeout=30) as http:  # the local user is on the free tier
        assert http.post("/api/chat", json=ask("fast")).status_code == 200
        assert http.post("/api/chat", json=ask("mock/echo")).status_code == 200
        refused = http.post("/api/chat", json=ask("premium"))
        assert refused.status_code == 400 and "not available on your plan" in refused.json()["error"]["message"]
