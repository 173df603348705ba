"""The model registry: named deployments, aliases that map to fallback chains, and tiers.

Loaded once per process (first use), from the first of: `MODEL_REGISTRY_JSON` (inline JSON),
`MODEL_REGISTRY_FILE` (a path), `MODEL_REGISTRY_PARAMETER` (an SSM parameter, fetched through
Powertools Parameters), else the `models.json` shipped in the layer. Validation uses pydantic
(cold start only); the per-request lookups are plain dict reads over frozen dataclasses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chatcore import errors
from chatcore.settings import Settings

Tier = Literal["fast", "standard", "premium"]
TIERS: tuple[Tier, ...] = ("fast", "standard", "premium")

# What a request's `complexity` asks for.
COMPLEXITY_TIERS: dict[str, Tier] = {"simple": "fast", "medium": "standard", "complex": "premium"}

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"


class RegistryError(ValueError):
    """The registry configuration is invalid. Raised at first use, with every problem listed."""


# --- Validation schema (cold start only) -------------------------------------------------


class _Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_token_s: float | None = Field(default=None, gt=0)
    idle_s: float | None = Field(default=None, gt=0)
    total_s: float | None = Field(default=None, gt=0)


class _Prices(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(default=0.0, ge=0)
    output: float = Field(default=0.0, ge=0)
    cached_input: float | None = Field(default=None, ge=0)


class _DeploymentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    model: str = Field(min_length=1, max_length=300)
    tier: Tier = "standard"
    context_window: int = Field(default=128_000, ge=256)
    max_output_tokens: int = Field(default=4096, ge=1)
    prices: _Prices | None = None  # required outside local use (see `Router.route`); 0 is a price
    timeouts: _Timeouts = Field(default_factory=_Timeouts)
    weight: float = Field(default=1.0, gt=0)
    stand_in: bool = False
    cache: bool = False  # the response cache, for every request this deployment answers first
    # What the model can read besides text; None: the provider's default (`CAPABILITIES`).
    vision: bool | None = None
    pdf: bool | None = None
    tools: bool = True  # the model can call tools; false: skipped for requests that offer tools


class _RegistrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployments: dict[str, _DeploymentSpec] = Field(min_length=1)
    aliases: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_names(self) -> _RegistrySpec:
        problems: list[str] = []
        for name in [*self.deployments, *self.aliases]:
            if not re.match(_NAME, name):
                problems.append(f"name {name!r} must match {_NAME}")
            if "/" in name:
                problems.append(f"name {name!r} must not contain '/' (reserved for provider/model)")
        for name in set(self.deployments) & set(self.aliases):
            problems.append(f"{name!r} is both a deployment and an alias")
        for alias, chain in self.aliases.items():
            if not chain:
                problems.append(f"alias {alias!r} has an empty chain")
            for target in chain:
                if target not in self.deployments:
                    problems.append(f"alias {alias!r} names unknown deployment {target!r}")
            if len(set(chain)) != len(chain):
                problems.append(f"alias {alias!r} lists a deployment twice")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# Attachments a provider's models take by default (a deployment's `vision` / `pdf` flags override):
# (images, PDFs). Ollama takes images only (a text-only model sets `"vision": false`).
CAPABILITIES: dict[str, tuple[bool, bool]] = {
    "openai": (True, True), "anthropic": (True, True), "gemini": (True, True), "bedrock": (True, True),
    "ollama": (True, False), "mock": (True, True),
}


def default_capabilities(provider: str) -> tuple[bool, bool]:
    """(vision, pdf) of a provider's deployments unless the registry says otherwise."""
    return CAPABILITIES.get(provider, (False, False))


# --- Runtime types (hot path) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deployment:
    """One model at one provider, with its limits, prices (USD per million tokens) and timeouts."""

    name: str
    provider: str
    model: str
    tier: Tier = "standard"
    context_window: int = 128_000
    max_output_tokens: int = 4096
    input_price: float = 0.0
    output_price: float = 0.0
    cached_input_price: float | None = None
    first_token_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    total_timeout_s: float | None = None
    weight: float = 1.0
    stand_in: bool = False  # a local stand-in (mock): used only when nothing else in the chain is configured
    ad_hoc: bool = False  # selected by `provider/model` (alone, no fallback chain)
    priced: bool = False  # the registry gives its prices (possibly 0): its cost is known, not assumed
    cache: bool = False  # answers of chains that start here are cached (chatcore.service.cache)
    vision: bool = False  # takes images
    pdf: bool = False  # takes PDF documents
    tools: bool = True  # the model can call tools (requests that offer tools skip it otherwise)

    @property
    def qualified_model(self) -> str:
        return f"{self.provider}/{self.model}"

    def accepts(self, media_type: str) -> bool:
        """Whether this deployment can be sent an attachment of `media_type` (text files travel as text)."""
        if media_type.startswith("image/"):
            return self.vision
        if media_type == "application/pdf":
            return self.pdf
        return True


@dataclass(frozen=True, slots=True)
class Selection:
    """What a request asked for, resolved: the ordered chain to try and the name it was asked by."""

    requested: str
    chain: tuple[Deployment, ...]


@dataclass
class ModelRegistry:
    """Deployments by name and aliases by name, plus a cache of resolved selections."""

    deployments: dict[str, Deployment]
    aliases: dict[str, tuple[str, ...]]
    source: str = "models.json"
    _by_model: dict[str, Deployment] = field(default_factory=dict, repr=False)
    _cache: dict[tuple[str, str | None], Selection] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for deployment in self.deployments.values():
            self._by_model.setdefault(deployment.qualified_model, deployment)

    def names(self) -> list[str]:
        """Every selectable name: aliases, tiers, deployments."""
        return sorted({*self.aliases, *TIERS, *self.deployments})

    def tier_chain(self, tier: str) -> tuple[str, ...]:
        """An alias with the tier's name wins; else the tier's deployments, heaviest first."""
        if tier in self.aliases:
            return self.aliases[tier]
        members = [d for d in self.deployments.values() if d.tier == tier]
        members.sort(key=lambda d: -d.weight)
        return tuple(d.name for d in members)

    def select(self, model: str, provider: str | None = None) -> Selection:
        """Resolve a request's `model` (name, alias, tier or `provider/model`) to a chain.

        A preferred `provider` moves its deployments to the front, keeping the order otherwise.
        Raises `RequestError` (400) for an unknown name, listing the valid ones.
        """
        key = (model, provider)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        chain: tuple[Deployment, ...]
        if model in self.aliases:
            chain = tuple(self.deployments[n] for n in self.aliases[model])
        elif model in TIERS:
            chain = tuple(self.deployments[n] for n in self.tier_chain(model))
        elif model in self.deployments:
            # A named deployment first, then the rest of its tier as fallbacks.
            first = self.deployments[model]
            rest = (self.deployments[n] for n in self.tier_chain(first.tier) if n != model)
            chain = (first, *rest)
        elif "/" in model:
            # Exactly what the client named, alone; a registered one keeps its prices and limits.
            known = self._by_model.get(model)
            chain = (replace(known, ad_hoc=True) if known else ad_hoc_deployment(model),)
        else:
            raise errors.UnknownModelError(
                f"Unknown model {model!r}. Use one of: {', '.join(self.names())}; or 'provider/model'.",
                valid=self.names())
        if not chain:
            raise errors.RequestError(f"Model {model!r} has no deployments.")
        if provider:
            chain = (*(d for d in chain if d.provider == provider), *(d for d in chain if d.provider != provider))
        selection = Selection(model, chain)
        if len(self._cache) < 1024:  # bounded: ad-hoc names come from clients
            self._cache[key] = selection
        return selection


def ad_hoc_deployment(model: str) -> Deployment:
    """A `provider/model` outside the registry: default limits, no price, the service's timeouts."""
    provider, sep, rest = model.partition("/")
    if not sep or not provider or not rest:
        raise errors.UnknownModelError(
            f"Model must be a registry name or 'provider/model', e.g. 'mock/echo'; got {model!r}.")
    vision, pdf = default_capabilities(provider)
    return Deployment(name=model, provider=provider, model=rest, ad_hoc=True, vision=vision, pdf=pdf)


def build_registry(raw: Mapping[str, Any], source: str = "inline") -> ModelRegistry:
    """Validate a registry document and build the runtime registry. Raises `RegistryError`."""
    try:
        spec = _RegistrySpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:20])
        raise RegistryError(f"Invalid model registry from {source}: {problems}") from None
    deployments = {
        name: Deployment(
            name=name, provider=d.provider, model=d.model, tier=d.tier, context_window=d.context_window,
            max_output_tokens=d.max_output_tokens, input_price=(d.prices or _Prices()).input,
            output_price=(d.prices or _Prices()).output, cached_input_price=(d.prices or _Prices()).cached_input,
            first_token_timeout_s=d.timeouts.first_token_s, idle_timeout_s=d.timeouts.idle_s,
            total_timeout_s=d.timeouts.total_s, weight=d.weight, stand_in=d.stand_in, priced=d.prices is not None,
            cache=d.cache, tools=d.tools,
            vision=d.vision if d.vision is not None else default_capabilities(d.provider)[0],
            pdf=d.pdf if d.pdf is not None else default_capabilities(d.provider)[1],
        )
        for name, d in spec.deployments.items()
    }
    aliases = {name: tuple(chain) for name, chain in spec.aliases.items()}
    return ModelRegistry(deployments, aliases, source=source)


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RegistryError(f"The model registry from {source} is not valid JSON: {exc}") from None


def without_provider(registry: ModelRegistry, provider: str) -> ModelRegistry:
    """`registry` without `provider`'s deployments, and without the aliases left with none."""
    deployments = {n: d for n, d in registry.deployments.items() if d.provider != provider}
    aliases = {name: kept for name, chain in registry.aliases.items()
               if (kept := tuple(n for n in chain if n in deployments))}
    return ModelRegistry(deployments, aliases, source=registry.source)


def load_registry(settings: Settings) -> ModelRegistry:
    """The registry this process uses: the first configured source, validated; the mock provider's
    deployments and the aliases that only lead to them (`demo-*`) exist only where it is enabled."""
    registry = _load(settings)
    return registry if settings.mock_provider else without_provider(registry, "mock")


def _load(settings: Settings) -> ModelRegistry:
    if settings.model_registry_json:
        return build_registry(_parse_json(settings.model_registry_json, "MODEL_REGISTRY_JSON"),
                              "MODEL_REGISTRY_JSON")
    if settings.model_registry_file:
        path = Path(settings.model_registry_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RegistryError(f"MODEL_REGISTRY_FILE {str(path)!r} cannot be read: {exc.strerror}") from None
        return build_registry(_parse_json(text, str(path)), str(path))
    if settings.model_registry_parameter:
        from aws_lambda_powertools.utilities import parameters

        name = settings.model_registry_parameter
        value = parameters.get_parameter(name, max_age=300)
        return build_registry(_parse_json(str(value), f"SSM {name}"), f"SSM {name}")
    text = resources.files("chatcore.routing").joinpath("models.json").read_text(encoding="utf-8")
    return build_registry(_parse_json(text, "models.json"), "models.json")
