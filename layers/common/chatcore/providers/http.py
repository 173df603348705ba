"""Shared HTTP plumbing for provider adapters: pooled clients, retry delays, error classification."""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx

from chatcore import errors
from chatcore.events import ProviderEvent
from chatcore.messages import ModelRequest
from chatcore.providers.base import ProbeResult
from chatcore.providers.streaming import StreamParser, relay

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)

CONNECT_TIMEOUT = 5.0


def client_for(key: str) -> httpx.AsyncClient:
    """A pooled client, created on first use (never at import) and reused across invocations.

    Clients are bound to the running event loop, so tests with a loop each stay isolated.
    """
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    client = per_loop.get(key)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=CONNECT_TIMEOUT, read=None, write=30.0, pool=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=60),
            follow_redirects=False,
        )
        per_loop[key] = client
    return client


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms`, then `retry-after` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (now if now is not None else time.time()), 0.0)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def parse_duration(value: object) -> float | None:
    """A protobuf Duration string such as `"41s"` or `"0.5s"`."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1))
    return None


def json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


_STATUS_CLASSES: dict[int, type[errors.ProviderError]] = {
    400: errors.BadRequestError,
    401: errors.AuthenticationError,
    402: errors.QuotaExhaustedError,
    403: errors.PermissionDeniedError,
    404: errors.ModelNotFoundError,
    408: errors.ProviderTimeoutError,
    413: errors.ContextTooLongError,
    422: errors.BadRequestError,
    429: errors.RateLimitedError,
    503: errors.OverloadedError,
    504: errors.ProviderTimeoutError,
    529: errors.OverloadedError,
}

# Matched against the provider's error *code/type* only: messages of ordinary rate limits also
# mention "billing" or "quota", so message text must never turn a transient 429 into a final one.
_QUOTA_CODES = ("insufficient_quota", "enforced_spend_limit", "billing_hard_limit", "quota_exceeded")
# Matched against code and message: a context overflow is only ever described in words.
_CONTEXT_HINTS = ("context_length", "context length", "context window", "too many tokens",
                  "prompt is too long", "maximum context", "input is too long",
                  "maximum model length", "context_window")


def classify_status(status: int, *, code: str = "", message: str = "") -> type[errors.ProviderError]:
    """The error class for an HTTP status, refined by the provider's error code and message."""
    code = code.lower()
    if status == 429 and any(h in code for h in _QUOTA_CODES):
        return errors.QuotaExhaustedError
    if status in (400, 413) and any(h in f"{code} {message.lower()}" for h in _CONTEXT_HINTS):
        return errors.ContextTooLongError
    if status in _STATUS_CLASSES:
        return _STATUS_CLASSES[status]
    if status >= 500:
        return errors.ServerError
    return errors.BadRequestError


def should_retry_override(headers: Mapping[str, str]) -> bool | None:
    """The provider's own verdict (`x-should-retry`, sent by OpenAI and Anthropic), if any."""
    value = (headers.get("x-should-retry") or "").strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None


async def read_error_body(response: httpx.Response, limit: int = 65536) -> str:
    """Read at most `limit` bytes of an error response body."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit].decode("utf-8", errors="replace")


def transport_error(exc: httpx.TransportError, provider: str, model: str, *,
                    reading_body: bool = False) -> errors.ProviderError:
    """The one mapping of transport failures to provider errors, for every HTTP adapter.

    Timeouts (connect, read, write, pool) are `ProviderTimeoutError`; a connection that breaks
    while the answer is being read is `TruncatedStreamError` (never a silent end); failing to
    connect or send is `NetworkError`. Messages never carry the URL or the key.
    """
    if isinstance(exc, httpx.TimeoutException):
        return errors.ProviderTimeoutError("The provider timed out.", provider=provider, model=model)
    if reading_body and isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return errors.TruncatedStreamError("The provider closed the connection before the answer was complete.",
                                           provider=provider, model=model)
    return errors.NetworkError("Could not reach the provider.", provider=provider, model=model)


async def iter_bytes(response: httpx.Response, provider: str, model: str) -> AsyncIterator[bytes]:
    """The raw body, with transport failures turned into classified provider errors."""
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.TransportError as exc:
        raise transport_error(exc, provider, model, reading_body=True) from exc


ErrorFromResponse = Callable[[int, Mapping[str, str], str], errors.ProviderError]


async def stream_post(
    client: httpx.AsyncClient,
    url: str,
    *,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    parser: StreamParser,
    error_from_response: ErrorFromResponse,
    provider: str,
    model: str,
) -> AsyncIterator[ProviderEvent]:
    """POST a streaming request and relay the parsed events; HTTP and transport errors classified.

    Leaving the generator early (client gone, deadline) exits the `client.stream` block, which
    closes the upstream connection instead of returning it to the pool half-read.
    """
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code >= 400:
                text = await read_error_body(response)
                raise error_from_response(response.status_code, response.headers, text)
            async for event in relay(parser, iter_bytes(response, provider, model)):
                yield event
    except httpx.TransportError as exc:
        raise transport_error(exc, provider, model) from exc


async def probe_get(client: httpx.AsyncClient, url: str, *, headers: Mapping[str, str],
                    timeout: float) -> ProbeResult:
    """A cheap GET (list models, version) as a health probe: `up` on 2xx, else `down` with why."""
    started = time.perf_counter()
    try:
        response = await client.get(url, headers=dict(headers), timeout=timeout)
    except httpx.HTTPError as exc:
        return ProbeResult("down", (time.perf_counter() - started) * 1000, type(exc).__name__)
    latency = (time.perf_counter() - started) * 1000
    if response.status_code >= 400:
        return ProbeResult("down", latency, f"HTTP {response.status_code}")
    return ProbeResult("up", latency)


class HTTPProvider:
    """Base of the adapters that stream over HTTP: a pooled client, a key, one stream and probe shape.

    A subclass says where to POST (`stream_url`), what (`build_body`), how to authenticate
    (`auth_headers`), how to read the answer (`parser`) and how to classify an HTTP error
    (`error_from_response`); `probe_path` is its cheap, unbilled GET.
    """

    provider_name = ""  # the registry name, `provider` in `provider/model`
    default_base_url = ""
    accept = "text/event-stream"
    probe_path = "/models"

    def __init__(self, *, api_key: Callable[[], str | None] | str | None = None, base_url: str | None = None,
                 name: str | None = None, http_client: httpx.AsyncClient | None = None) -> None:
        self.name = name or self.provider_name
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self._api_key = api_key
        self._http_client = http_client  # tests inject one; otherwise the pooled client

    def api_key(self) -> str | None:
        return self._api_key() if callable(self._api_key) else self._api_key

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": self.accept}
        key = self.api_key()
        if key:
            headers.update(self.auth_headers(key))
        return headers

    def _client(self) -> httpx.AsyncClient:
        return self._http_client or client_for(f"{self.name}:{self.base_url}")

    def stream_url(self, request: ModelRequest) -> str:
        raise NotImplementedError

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        raise NotImplementedError

    # The adapter's wire parser class, `parser_class(provider, model)`, and its HTTP error
    # classifier, `classify(status, headers, text, provider=..., model=...)`.
    parser_class: Callable[[str, str], StreamParser]
    classify: Callable[..., errors.ProviderError]

    def parser(self, model: str) -> StreamParser:
        return self.parser_class(self.name, model)

    def error_from_response(self, status: int, headers: Mapping[str, str], text: str, *,
                            model: str) -> errors.ProviderError:
        return self.classify(status, headers, text, provider=self.name, model=model)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        """Stream one answer as events; raises a classified `ProviderError` on failure."""
        def classify(status: int, headers: Mapping[str, str], text: str) -> errors.ProviderError:
            return self.error_from_response(status, headers, text, model=request.model)

        async for event in stream_post(
            self._client(), self.stream_url(request), body=self.build_body(request), headers=self._headers(),
            parser=self.parser(request.model), error_from_response=classify, provider=self.name,
            model=request.model,
        ):
            yield event

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        """The cheap, unbilled GET at `probe_path` (list models, version)."""
        return await probe_get(self._client(), f"{self.base_url}{self.probe_path}", headers=self._headers(),
                               timeout=timeout)
