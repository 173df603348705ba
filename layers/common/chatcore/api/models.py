"""`GET /v1/models`: the selectable model names, in the OpenAI list format.

`{"object": "list", "data": [{"id", "object": "model", "owned_by", ...}]}`, in this order: the
registry's aliases, its tiers, its deployments, then the mock provider's behaviours when that
provider is available. Extra fields say what each name is (`kind`: alias, tier, deployment, mock),
its `tier`, and whether a provider for it is configured (`available`), so a model picker can group
and grey them. Cheap: the registry is loaded once per process and nothing here calls a provider.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from chatcore.routing.registry import TIERS, ModelRegistry
from chatcore.service.chat import ChatService

router = APIRouter(tags=["models"])

# The mock provider's behaviours worth offering in a picker (any `mock/...` name works).
MOCK_MODELS = ("mock/echo", "mock/lorem", "mock/reason", "mock/lorem?tokens=200&pace_ms=30",
               "mock/fail-429", "mock/fail-after-5")


def _entry(model_id: str, owned_by: str, kind: str, available: bool, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owned_by, "kind": kind,
            "available": available, **extra}


def model_list(registry: ModelRegistry, providers: set[str]) -> list[dict[str, Any]]:
    """Aliases, tiers, deployments and the mock behaviours, as OpenAI model objects."""
    def chain_available(names: tuple[str, ...]) -> bool:
        return any(registry.deployments[n].provider in providers for n in names)

    data = [_entry(name, "alias", "alias", chain_available(chain), chain=list(chain))
            for name, chain in sorted(registry.aliases.items())]
    data += [_entry(tier, "tier", "tier", chain_available(registry.tier_chain(tier)),
                    chain=list(registry.tier_chain(tier)))
             for tier in TIERS if tier not in registry.aliases]
    data += [_entry(name, d.provider, "deployment", d.provider in providers, tier=d.tier,
                    model=d.qualified_model, context_window=d.context_window)
             for name, d in sorted(registry.deployments.items())]
    if "mock" in providers:
        data += [_entry(name, "mock", "mock", True) for name in MOCK_MODELS]
    return data


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The model names a request's `model` may carry (OpenAI's `GET /v1/models` shape)."""
    components = request.app.state.components
    principal = await components.authenticator.authenticate(request)
    service: ChatService = request.app.state.chat
    models = model_list(service.router.registry, set(components.providers.available()))
    return {"object": "list", "data": [m for m in models if service.access.allows(principal.tier, m["id"])]}
