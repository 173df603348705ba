"""The model registry: the shipped file, overrides, validation errors and selection."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from chatcore import errors
from chatcore.providers import ProviderRegistry
from chatcore.providers.mock import MockProvider
from chatcore.routing import RegistryError, Router, build_registry, load_registry
from chatcore.routing.registry import TIERS
from chatcore.settings import Settings

from devtools.emulator import Emulator


def small_registry(**extra: Any) -> dict[str, Any]:
    return {
        "deployments": {
            "a-fast": {"provider": "openai", "model": "gpt-a", "tier": "fast", "weight": 1},
            "b-fast": {"provider": "anthropic", "model": "claude-b", "tier": "fast", "weight": 3},
            "c-std": {"provider": "openai", "model": "gpt-c", "tier": "standard"},
            "m-fast": {"provider": "mock", "model": "echo", "tier": "fast", "stand_in": True},
        },
        "aliases": {"chat": ["a-fast", "c-std", "b-fast"]},
        **extra,
    }


def test_shipped_registry_is_valid_and_covers_every_tier() -> None:
    registry = load_registry(Settings())
    assert registry.source == "models.json"
    for tier in (*TIERS, "default"):
        chain = registry.select(tier).chain
        assert chain, tier
        assert len({d.provider for d in chain}) >= 3, f"{tier} must cross providers"
        assert chain[-1].stand_in and chain[-1].provider == "mock", "a local stand-in ends every tier chain"
    fault_models = {d.model for d in registry.deployments.values() if d.provider == "mock"}
    assert {"fail-429", "fail-529", "fail-500", "fail-401", "fail-context", "fail-quota"} <= fault_models


@pytest.mark.parametrize(("document", "expected"), [
    ({"deployments": {}}, "deployments"),
    ({"deployments": {"x": {"provider": "openai", "model": "m", "tier": "huge"}}}, "tier"),
    ({"deployments": {"x": {"provider": "openai", "model": "m", "prices": {"input": -1}}}}, "prices.input"),
    ({"deployments": {"x": {"provider": "openai", "model": "m"}}, "aliases": {"y": ["nope"]}},
     "alias 'y' names unknown deployment 'nope'"),
    ({"deployments": {"x": {"provider": "openai", "model": "m"}}, "aliases": {"x": ["x"]}},
     "both a deployment and an alias"),
    ({"deployments": {"x": {"provider": "openai", "model": "m", "colour": "red"}}}, "colour"),
    ({"deployments": {"x": {"provider": "openai", "model": "m", "context_window": 10}}}, "context_window"),
])
def test_invalid_registry_names_the_problem(document: dict[str, Any], expected: str) -> None:
    with pytest.raises(RegistryError) as caught:
        build_registry(document, "test.json")
    assert "test.json" in str(caught.value)
    assert expected in str(caught.value)


def test_inline_json_wins_over_file(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps(small_registry()))
    from_file = load_registry(Settings(model_registry_file=str(path)))
    assert set(from_file.deployments) == {"a-fast", "b-fast", "c-std", "m-fast"}
    inline = {"deployments": {"only": {"provider": "mock", "model": "echo"}}}
    both = load_registry(Settings(model_registry_file=str(path), model_registry_json=json.dumps(inline)))
    assert set(both.deployments) == {"only"}


def test_unreadable_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot be read"):
        load_registry(Settings(model_registry_file=str(tmp_path / "missing.json")))
    with pytest.raises(RegistryError, match="not valid JSON"):
        load_registry(Settings(model_registry_json="{nope"))


def test_registry_from_ssm_parameter(aws_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.moto_dynamodb import AWS_ENV

    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", aws_emulator.endpoint)
    ssm = boto3.client("ssm", endpoint_url=aws_emulator.endpoint, region_name="us-east-1")
    ssm.put_parameter(Name="/chat/models", Value=json.dumps(small_registry()), Type="String", Overwrite=True)
    registry = load_registry(Settings(model_registry_parameter="/chat/models"))
    assert registry.source == "SSM /chat/models"
    assert registry.select("chat").chain[0].name == "a-fast"


def test_selection_by_name_alias_tier_and_provider_model() -> None:
    registry = build_registry(small_registry())
    assert [d.name for d in registry.select("chat").chain] == ["a-fast", "c-std", "b-fast"]
    # A tier without an alias: its deployments, heaviest first.
    assert [d.name for d in registry.select("fast").chain] == ["b-fast", "a-fast", "m-fast"]
    # A named deployment, then the rest of its tier.
    assert [d.name for d in registry.select("a-fast").chain] == ["a-fast", "b-fast", "m-fast"]
    # provider/model of a registered deployment uses its entry (prices, limits), alone.
    (named,) = registry.select("openai/gpt-c").chain
    assert named.name == "c-std" and named.ad_hoc and named.tier == "standard"
    ad_hoc = registry.select("openai/gpt-unlisted").chain
    assert len(ad_hoc) == 1 and ad_hoc[0].ad_hoc and ad_hoc[0].model == "gpt-unlisted"
    # A preferred provider goes first, the order is otherwise kept.
    assert [d.name for d in registry.select("chat", "anthropic").chain] == ["b-fast", "a-fast", "c-std"]


def test_unknown_model_is_400_listing_valid_names() -> None:
    registry = build_registry(small_registry())
    with pytest.raises(errors.RequestError) as caught:
        registry.select("gpt-5-ultra")
    assert caught.value.status_code == 400
    body = caught.value.public_body()["error"]
    assert "'gpt-5-ultra'" in body["message"]
    assert {"chat", "a-fast", "fast", "premium"} <= set(body["valid"])


def test_stand_ins_are_used_only_when_nothing_real_is_configured() -> None:
    registry = build_registry(small_registry())
    local = Settings()
    router = Router(local, ProviderRegistry(local), registry=registry)
    assert [d.name for d in router.usable(registry.select("fast"))] == ["m-fast"]
    configured = dataclasses.replace(local, openai_api_key="sk-test-not-real")
    router = Router(configured, ProviderRegistry(configured), registry=registry)
    assert [d.name for d in router.usable(registry.select("fast"))] == ["a-fast"]


def test_chain_with_nothing_configured_is_503() -> None:
    registry = build_registry(small_registry())
    settings = Settings()
    router = Router(settings, ProviderRegistry(settings, overrides={"mock": MockProvider()}), registry=registry)
    with pytest.raises(errors.ServiceUnavailableError, match="openai"):
        router.usable(registry.select("c-std"))
