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
from chatcore.messages import Message, ModelRequest
from chatcore.providers import http
from chatcore.providers.base import provider_options
from chatcore.providers.request_body import data_url, json_text, tool_choice
from chatcore.providers.streaming import SSEStreamParser, ToolCallStreams, malformed, token_count
from chatcore.settings import OPENAI_BASE_URL, Settings

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
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    return Usage(
        input_tokens=token_count(raw.get("prompt_tokens")),
        output_tokens=token_count(raw.get("completion_tokens")),
        cached_input_tokens=token_count(prompt_details.get("cached_tokens"))
        if isinstance(prompt_details, dict) else None,
        reasoning_tokens=token_count(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict) else None,
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
            errors.safe_message(message), provider=provider, model=model, http_status=200,
            retryable=retryable, retry_after=retry_after, provider_code=code_text.replace(" ", ":"),
        )
    cls = http.classify_status(http_status, code=code_text, message=message)
    return cls(errors.safe_message(message), provider=provider, model=model, http_status=http_status,
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
        self._tools = ToolCallStreams()

    def _event(self, data: str, out: list[ProviderEvent]) -> None:
        if data == "[DONE]":
            self._done = True
            out.extend(self._tools.end_all())
            reason = _FINISH.get(self._finish or "", "other") if self._finish else "stop"
            if reason == "stop" and self._tools.count:
                reason = "tool_calls"  # compatible servers that call tools but say "stop"
            out.append(Finish(reason=reason, raw_reason=self._finish, usage=self._usage))
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            self.error = malformed(self.provider, self.model)
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
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._tool_call(call, out)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                out.extend(self._tools.end_all())  # the usage chunk may follow; the calls are complete

    def _tool_call(self, call: Mapping[str, Any], out: list[ProviderEvent]) -> None:
        """One `delta.tool_calls[]` entry: keyed by `index`; id and name first, then argument fragments."""
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        key = call.get("index", 0)
        call_id = call.get("id") if isinstance(call.get("id"), str) else None
        name = function.get("name") if isinstance(function.get("name"), str) else None
        if call_id or name or key not in self._tools:
            out.extend(self._tools.begin(key, call_id, name))
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            out.extend(self._tools.append(key, arguments))
        elif isinstance(arguments, dict):  # a few compatible servers send an object
            out.extend(self._tools.append(key, json.dumps(arguments)))


def _message(message: Message) -> list[dict[str, Any]]:
    """One domain message as Chat Completions messages (a tool turn is one message per result)."""
    if message.role == "tool":
        return [{"role": "tool", "tool_call_id": r.call_id, "content": json_text(r.output)}
                for r in message.tool_results]
    if message.role == "assistant" and message.tool_calls:
        return [{"role": "assistant", "content": message.content or None, "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json_text(c.input)}}
            for c in message.tool_calls]}]
    if message.attachments:
        return [{"role": message.role, "content": _content_parts(message)}]
    return [{"role": message.role, "content": message.content}]


def _content_parts(message: Message) -> list[dict[str, Any]]:
    """A message with attachments as content parts: its text, then images as `image_url` data URLs and
    PDFs as `file` parts with `file_data`."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content else []
    for attachment in message.attachments:
        if attachment.is_image:
            parts.append({"type": "image_url", "image_url": {"url": data_url(attachment)}})
        else:
            parts.append({"type": "file", "file": {"filename": attachment.filename or "document.pdf",
                                                   "file_data": data_url(attachment)}})
    return parts


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
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for message in request.messages:
            messages.extend(_message(message))
        body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": True}
        if request.tools:
            body["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.input_schema}}
                for t in request.tools]
        choice = tool_choice(request)
        if choice is not None:
            body["tool_choice"] = choice if choice in ("auto", "none", "required") else {
                "type": "function", "function": {"name": choice}}
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


def from_settings(settings: Settings) -> OpenAIProvider | None:
    """The provider when a key (or a key secret name) or a non-default base URL is configured."""
    from chatcore.secrets import api_key_getter

    key = api_key_getter(settings, "openai", settings.openai_api_key)
    if key is None and settings.openai_base_url == OPENAI_BASE_URL:
        return None
    return OpenAIProvider(api_key=key, base_url=settings.openai_base_url)
