"""OpenAI Chat Completions streaming, and every OpenAI-compatible server.

Works with api.openai.com and with vLLM, Ollama `/v1`, llama.cpp, OpenRouter, Groq and others
through `OPENAI_BASE_URL`. Differences handled: usage on any chunk (standard usage chunk,
`x_groq.usage`, continuous usage), `choices` empty or null, SSE comments, error objects inside a
200 stream (with or without a following `[DONE]`), and EOF without `[DONE]`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx

from chatcore import errors
from chatcore.events import (
    Finish,
    FinishReason,
    ProviderEvent,
    ReasoningDelta,
    ResponseInfo,
    TextDelta,
    Usage,
    UsageReport,
)
from chatcore.framing.sse import SSEDecoder, SSEEvent
from chatcore.messages import ModelRequest
from chatcore.providers import http
from chatcore.providers.base import ProbeResult
from chatcore.providers.streaming import relay

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}


def _usage(raw: Mapping[str, Any]) -> Usage:
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=raw.get("prompt_tokens"),
        output_tokens=raw.get("completion_tokens"),
        cached_input_tokens=prompt_details.get("cached_tokens"),
        reasoning_tokens=completion_details.get("reasoning_tokens"),
    )


def error_from_payload(payload: Mapping[str, Any], *, provider: str, model: str,
                       http_status: int, headers: Mapping[str, str] | None = None) -> errors.ProviderError:
    """Classify an OpenAI-style error object (`{"error": {...}}` or vLLM's flat form)."""
    err = payload.get("error", payload)
    if not isinstance(err, Mapping):
        err = {"message": str(err)}
    message = str(err.get("message") or "The provider returned an error.")
    code = err.get("code")
    etype = err.get("type")
    hint = " ".join(str(x) for x in (code, etype, message) if x)
    retry_after = http.parse_retry_after(headers or {})
    if http_status == 200:
        # In-stream: the status inside the error (OpenRouter) or its type decides.
        inner = int(code) if isinstance(code, int) or (isinstance(code, str) and code.isdigit()) else 0
        cls = http.classify_status(inner, hint=hint) if inner else None
        if cls is None and any(h in hint.lower() for h in ("badrequest", "invalid_request", "context")):
            cls = errors.BadRequestError
        retryable = cls.retryable if cls is not None else True
        if inner and inner >= 500:
            retryable = True
        return errors.InStreamError(
            http.safe_message(message), provider=provider, model=model, http_status=200,
            retryable=retryable, retry_after=retry_after, provider_code=str(code or etype or ""),
        )
    cls = http.classify_status(http_status, hint=hint)
    return cls(http.safe_message(message), provider=provider, model=model, http_status=http_status,
               retry_after=retry_after, provider_code=str(code or etype or ""))


class OpenAIStreamParser:
    """Chat Completions SSE bytes to events."""

    def __init__(self, provider: str = "openai", model: str = "") -> None:
        self.provider = provider
        self.model = model
        self.error: errors.ProviderError | None = None
        self._decoder = SSEDecoder()
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._done = False
        self._info_sent = False

    def feed(self, chunk: bytes) -> list[ProviderEvent]:
        if self.error is not None or self._done:
            return []
        out: list[ProviderEvent] = []
        for item in self._decoder.feed(chunk):
            if isinstance(item, SSEEvent):
                self._event(item.data, out)
                if self.error is not None or self._done:
                    break
        return out

    def close(self) -> list[ProviderEvent]:
        out: list[ProviderEvent] = []
        if self.error is None and not self._done:
            for item in self._decoder.flush():
                if isinstance(item, SSEEvent):
                    self._event(item.data, out)
        if self.error is not None:
            raise self.error
        if not self._done:
            raise errors.TruncatedStreamError(
                "The provider closed the stream before it was complete.",
                provider=self.provider, model=self.model,
            )
        return out

    def _event(self, data: str, out: list[ProviderEvent]) -> None:
        if data == "[DONE]":
            self._done = True
            reason = _FINISH.get(self._finish or "", "other") if self._finish else "stop"
            out.append(Finish(reason=reason, raw_reason=self._finish, usage=self._usage))
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            self.error = errors.InStreamError(
                "The provider sent malformed data.", provider=self.provider, model=self.model,
                http_status=200, retryable=True,
            )
            return
        if not isinstance(chunk, dict):
            return
        if chunk.get("error") or chunk.get("object") == "error":
            self.error = error_from_payload(chunk, provider=self.provider, model=self.model, http_status=200)
            return
        if not self._info_sent and (chunk.get("id") or chunk.get("model")):
            self._info_sent = True
            out.append(ResponseInfo(model=chunk.get("model"), response_id=chunk.get("id")))
        usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
        if isinstance(usage, dict):
            self._usage = _usage(usage)
            out.append(UsageReport(self._usage))
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.append(ReasoningDelta(reasoning))
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(TextDelta(content))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                out.append(TextDelta(refusal))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]


class OpenAIProvider:
    """An OpenAI Chat Completions endpoint (or a compatible server at another base URL)."""

    def __init__(
        self,
        *,
        api_key: Callable[[], str | None] | str | None,
        base_url: str = "https://api.openai.com/v1",
        name: str = "openai",
        include_usage: bool = True,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.include_usage = include_usage
        self._extra_headers = dict(extra_headers or {})

    def _headers(self) -> dict[str, str]:
        key = self._api_key() if callable(self._api_key) else self._api_key
        headers = {"content-type": "application/json", "accept": "text/event-stream", **self._extra_headers}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": m.content} for m in request.messages)
        body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": True}
        if self.include_usage:
            body["stream_options"] = {"include_usage": True}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_output_tokens is not None:
            body["max_completion_tokens"] = request.max_output_tokens
        if request.stop:
            body["stop"] = list(request.stop)
        body.update(request.options.get("openai", {}))
        return body

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        client = http.client_for(f"{self.name}:{self.base_url}")
        try:
            async with client.stream("POST", f"{self.base_url}/chat/completions",
                                     json=self.build_body(request), headers=self._headers()) as response:
                if response.status_code >= 400:
                    text = await http.read_error_body(response)
                    payload = http.json_or_none(text)
                    if not isinstance(payload, dict):
                        payload = {"error": {"message": f"HTTP {response.status_code} from the provider."}}
                    raise error_from_payload(payload, provider=self.name, model=request.model,
                                             http_status=response.status_code, headers=response.headers)
                parser = OpenAIStreamParser(self.name, request.model)
                async for event in relay(parser, http.iter_bytes(response, self.name, request.model)):
                    yield event
        except httpx.TransportError as exc:
            raise http.transport_error(exc, self.name, request.model) from exc

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        """`GET /models`: free, and proves the key and the endpoint."""
        started = time.perf_counter()
        try:
            response = await http.client_for(f"{self.name}:{self.base_url}").get(
                f"{self.base_url}/models", headers=self._headers(), timeout=timeout)
        except httpx.HTTPError as exc:
            return ProbeResult("down", (time.perf_counter() - started) * 1000, type(exc).__name__)
        latency = (time.perf_counter() - started) * 1000
        if response.status_code >= 400:
            return ProbeResult("down", latency, f"HTTP {response.status_code}")
        return ProbeResult("up", latency)
