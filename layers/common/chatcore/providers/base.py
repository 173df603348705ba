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


def json_output(request: ModelRequest) -> dict[str, Any] | None:
    """The request's `response_format` when it asks for JSON (`json_object` or `json_schema`), else None."""
    fmt = request.response_format
    if not fmt or fmt.get("type", "text") == "text":
        return None
    return fmt


def refuse_json_output(request: ModelRequest, provider: str) -> None:
    """A 400 when the request asks for JSON output from a provider that cannot guarantee it.

    Raised before the call (a client fault, so the router does not fall back to another deployment).
    """
    fmt = json_output(request)
    if fmt is not None:
        raise errors.RequestError(
            f"response_format {fmt.get('type')!r} is not supported by provider {provider!r}; "
            "use a model whose provider can constrain its output to JSON (OpenAI-compatible, Gemini, Ollama).",
            param="response_format")
