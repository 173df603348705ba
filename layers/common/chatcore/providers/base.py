"""The interface every provider adapter implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

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
