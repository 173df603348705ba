"""OpenAI Chat Completions streaming, and every OpenAI-compatible server.

Works with api.openai.com and with vLLM, Ollama `/v1`, llama.cpp, OpenRouter, Groq and others
through `OPENAI_BASE_URL`. Differences handled: usage on any chunk (standard usage chunk,
`x_groq.usage`, continuous usage), `choices` empty or null, SSE comments, error objects inside a
200 stream (with or without a following `[DONE]`), and EOF without `[DONE]`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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
from chatcore.messages import ModelRequest
from chatcore.providers import http
from chatcore.providers.base import provider_options
from chatcore.providers.streaming import SSEStreamParser

OPENAI_BASE_URL = "https://api.openai.com/v1"
# Passed through as body fields (ModelRequest.options["openai"]); anything else is a 400.
OPENAI_OPTIONS = frozenset({
    "top_p", "seed", "presence_penalty", "frequency_penalty", "reasoning_effort", "service_tier",
    "user", "logit_bias", "response_format", "parallel_tool_calls", "verbosity", "top_k", "min_p",
    "repetition_penalty", "provider", "transforms", "route", "models",
})

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
    """Classify an OpenAI-style error object (`{"error": {...}}` or vLLM's older flat form).

    After HTTP 200 the error is an `InStreamError`; whether a retry helps comes from the status
    inside it (OpenRouter, vLLM put one in `code`) or its type (`server_error` and unknowns retry).
    """
    err = payload.get("error", payload)
    if not isinstance(err, Mapping):
        err = {"message": str(err)}
    message = str(err.get("message") or "The provider returned an error.")
    code = err.get("code")
    etype = err.get("type")
    code_text = " ".join(str(x) for x in (etype, code) if x)
    headers = headers or {}
    retry_after = http.parse_retry_after(headers)
    if http_status == 200:
        inner = int(code) if isinstance(code, int) or (isinstance(code, str) and code.isdigit()) else 0
        if inner >= 400:
            cls = http.classify_status(inner, code=code_text, message=message)
            retryable = cls.retryable or inner >= 500
        else:
            lowered = code_text.lower()
            retryable = not any(h in lowered for h in ("badrequest", "invalid_request", "context_length"))
        return errors.InStreamError(
            http.safe_message(message), provider=provider, model=model, http_status=200,
            retryable=retryable, retry_after=retry_after, provider_code=code_text.replace(" ", ":"),
        )
    cls = http.classify_status(http_status, code=code_text, message=message)
    return cls(http.safe_message(message), provider=provider, model=model, http_status=http_status,
               retry_after=retry_after, retryable=_retryable(cls, headers),
               provider_code=code_text.replace(" ", ":"))


def _retryable(cls: type[errors.ProviderError], headers: Mapping[str, str]) -> bool:
    """The class decides, but a quota error stays final even if the server says retry."""
    override = http.should_retry_override(headers)
    if override is None or cls is errors.QuotaExhaustedError:
        return cls.retryable
    return override


def error_from_response(status: int, headers: Mapping[str, str], text: str, *, provider: str,
                        model: str) -> errors.ProviderError:
    """An HTTP error response (JSON error object, or a proxy's HTML page) classified."""
    payload = http.json_or_none(text)
    if not isinstance(payload, dict):
        payload = {"error": {"message": f"HTTP {status} from the provider."}}
    return error_from_payload(payload, provider=provider, model=model, http_status=status, headers=headers)


class OpenAIStreamParser(SSEStreamParser):
    """Chat Completions SSE bytes to events."""

    def __init__(self, provider: str = "openai", model: str = "") -> None:
        super().__init__(provider, model)
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._info_sent = False

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


class OpenAIProvider(http.HTTPProvider):
    """An OpenAI Chat Completions endpoint (or a compatible server at another base URL).

    Probe: `GET /models`, free, and proves both the key and the endpoint.
    """

    provider_name = "openai"
    default_base_url = OPENAI_BASE_URL
    probe_path = "/models"
    parser_class = OpenAIStreamParser
    classify = staticmethod(error_from_response)

    def __init__(
        self,
        *,
        api_key: Callable[[], str | None] | str | None,
        base_url: str = OPENAI_BASE_URL,
        name: str = "openai",
        include_usage: bool = True,
        extra_headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(name=name, base_url=base_url, api_key=api_key, http_client=http_client)
        self.include_usage = include_usage
        self._extra_headers = dict(extra_headers or {})

    def _headers(self) -> dict[str, str]:
        return {**super()._headers(), **self._extra_headers}

    def stream_url(self, request: ModelRequest) -> str:
        return f"{self.base_url}/chat/completions"

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
            # api.openai.com deprecated max_tokens; most compatible servers only know max_tokens.
            key = "max_completion_tokens" if self.base_url == OPENAI_BASE_URL else "max_tokens"
            body[key] = request.max_output_tokens
        if request.stop:
            body["stop"] = list(request.stop)
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.seed is not None:
            body["seed"] = request.seed
        if request.response_format is not None:
            body["response_format"] = request.response_format
        body.update(provider_options(request, "openai", OPENAI_OPTIONS))
        return body
