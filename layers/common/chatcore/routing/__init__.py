"""Multi-model routing: the model registry, fallback with retries, the shared circuit breaker, cost."""

from chatcore.routing.breaker import BreakerState, CircuitBreaker, InMemoryBreakerStore
from chatcore.routing.pricing import cost_usd
from chatcore.routing.registry import (
    COMPLEXITY_TIERS,
    Deployment,
    ModelRegistry,
    RegistryError,
    build_registry,
    load_registry,
)
from chatcore.routing.router import Fallback, Route, Router, model_selector

__all__ = [
    "COMPLEXITY_TIERS",
    "BreakerState",
    "CircuitBreaker",
    "Deployment",
    "Fallback",
    "InMemoryBreakerStore",
    "ModelRegistry",
    "RegistryError",
    "Route",
    "Router",
    "build_registry",
    "cost_usd",
    "load_registry",
    "model_selector",
]
