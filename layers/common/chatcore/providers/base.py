"""The interface every provider adapter implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from chatcore import errors
from chatcore.events import ProviderEvent
from chatcore.messages import ModelRequest

ProbeStatus = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of a cheap, unbilled health probe (list models, version...)."""

    status: ProbeStatus
    latency_ms: float
    detail: str = ""


class Provider(Protocol):
    """A model provider: streams one request as typed events, raising `ProviderError` on failure.

    Implementations must end with a `Finish` event or raise; a stream that ends without the
    provider's end marker raises `TruncatedStreamError`.
    """

    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]: ...

    async def probe(self, timeout: float = 5.0) -> ProbeResult: ...


def provider_options(request: ModelRequest, key: str, allowed: frozenset[str]) -> dict[str, Any]:
    """`request.options[key]`, checked against the option names this provider accepts.

    An unknown name is a client mistake (a 400), not something to forward blindly upstream.
    """
    options = request.options.get(key) or {}
    if not isinstance(options, dict):
        raise errors.RequestError(f"options.{key} must be an object.")
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise errors.RequestError(
            f"Unsupported options for {key}: {', '.join(unknown)}. Allowed: {', '.join(sorted(allowed))}.")
    return dict(options)
