"""Anthropic Messages API streaming (`POST /v1/messages`, `stream: true`).

Wire rules handled: input tokens from `message_start` (plus cache reads and writes), the
cumulative `output_tokens` of `message_delta` (replaced, never added), thinking blocks as
reasoning, `ping` and unknown events ignored, `event: error` after HTTP 200, and EOF without
`message_stop` as truncation, `tool_use` blocks with their `input_json_delta` fragments as tool
calls. Requests: top-level `system`, required `max_tokens`, tools, assistant `tool_use` blocks,
tool results as `tool_result` blocks of a user turn, consecutive same-role turns merged (the API
wants alternating turns).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

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
from chatcore.messages import Attachment, Message, ModelRequest
from chatcore.providers import http
from chatcore.providers.base import provider_options, refuse_json_output
from chatcore.providers.request_body import alternate, base64_data, input_object, json_text, tool_choice
from chatcore.providers.streaming import SSEStreamParser, ToolCallStreams, add_counts, malformed, token_count
from chatcore.settings import Settings

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
ANTHROPIC_OPTIONS = frozenset({"thinking", "top_p", "top_k", "metadata", "service_tier"})

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "other",
}

# Error `type` -> class, for HTTP errors and for `event: error` inside a 200 stream.
_ERROR_TYPES: dict[str, type[errors.ProviderError]] = {
    "invalid_request_error": errors.BadRequestError,
    "authentication_error": errors.AuthenticationError,
    "permission_error": errors.PermissionDeniedError,
    "not_found_error": errors.ModelNotFoundError,
    "request_too_large": errors.ContextTooLongError,
    "rate_limit_error": errors.RateLimitedError,
    "api_error": errors.ServerError,
    "overloaded_error": errors.OverloadedError,
    "timeout_error": errors.ProviderTimeoutError,
    "billing_error": errors.QuotaExhaustedError,
}


def _error_class(status: int, etype: str, message: str, details: object) -> type[errors.ProviderError]:
    detail_code = str(details.get("error_code", "")) if isinstance(details, Mapping) else ""
    if "enforced_spend_limit" in detail_code or etype == "billing_error":
        return errors.QuotaExhaustedError
    if etype == "invalid_request_error" and "prompt is too long" in message.lower():
        return errors.ContextTooLongError
    if etype in _ERROR_TYPES:
        return _ERROR_TYPES[etype]
    return http.classify_status(status, code=etype, message=message)


def error_from_response(status: int, headers: Mapping[str, str], text: str, *, provider: str = "anthropic",
                        model: str = "") -> errors.ProviderError:
    """Classify an HTTP error: `{"type":"error","error":{"type","message","details"?}}`."""
    payload = http.json_or_none(text)
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        err = {"type": "", "message": f"HTTP {status} from the provider."}
    etype = str(err.get("type") or "")
    message = str(err.get("message") or f"HTTP {status} from the provider.")
    cls = _error_class(status, etype, message, err.get("details"))
    retryable = cls.retryable
    override = http.should_retry_override(headers)
    if override is not None and cls is not errors.QuotaExhaustedError:
        retryable = override
    return cls(errors.safe_message(message), provider=provider, model=model, http_status=status,
               retry_after=http.parse_retry_after(headers), retryable=retryable, provider_code=etype)


class AnthropicStreamParser(SSEStreamParser):
    """Messages SSE bytes to events."""

    def __init__(self, provider: str = "anthropic", model: str = "") -> None:
        super().__init__(provider, model)
        self._input: int | None = None
        self._cached: int | None = None
        self._output: int | None = None
        self._stop_reason: str | None = None
        self._tools = ToolCallStreams()

    def _usage(self) -> Usage:
        return Usage(input_tokens=self._input, output_tokens=self._output, cached_input_tokens=self._cached)

    def _take_usage(self, raw: Mapping[str, Any], *, with_output: bool) -> None:
        if not isinstance(raw, Mapping):
            return
        input_tokens = token_count(raw.get("input_tokens"))
        if input_tokens is not None:
            cache_read = token_count(raw.get("cache_read_input_tokens"))
            self._input = add_counts(input_tokens, cache_read, token_count(raw.get("cache_creation_input_tokens")))
            self._cached = cache_read
        output_tokens = token_count(raw.get("output_tokens"))
        if with_output and output_tokens is not None:
            self._output = output_tokens  # cumulative: replace, never add

    def _event(self, data: str, out: list[ProviderEvent]) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            self.error = malformed(self.provider, self.model)
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                out.append(TextDelta(delta["text"]))
            elif dtype == "thinking_delta" and delta.get("thinking"):
                out.append(ReasoningDelta(delta["thinking"]))
            elif dtype == "input_json_delta" and isinstance(delta.get("partial_json"), str):
                out.extend(self._tools.append(event.get("index"), delta["partial_json"]))
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                key = event.get("index")
                out.extend(self._tools.begin(key, block.get("id"), block.get("name")))
                if block.get("input"):  # a block that arrives with its input (no deltas will follow)
                    out.extend(self._tools.append(key, json.dumps(block["input"])))
        elif kind == "content_block_stop":
            out.extend(self._tools.end(event.get("index")))
        elif kind == "message_start":
            message = event.get("message") or {}
            out.append(ResponseInfo(model=message.get("model"), response_id=message.get("id")))
            # message_start's output_tokens (1) is a placeholder: output stays unknown until message_delta.
            self._take_usage(message.get("usage") or {}, with_output=False)
            out.append(UsageReport(self._usage()))
        elif kind == "message_delta":
            self._stop_reason = (event.get("delta") or {}).get("stop_reason") or self._stop_reason
            self._take_usage(event.get("usage") or {}, with_output=True)
            out.append(UsageReport(self._usage()))
        elif kind == "message_stop":
            self._done = True
            out.extend(self._tools.end_all())
            reason = _FINISH.get(self._stop_reason or "", "other") if self._stop_reason else "stop"
            out.append(Finish(reason=reason, raw_reason=self._stop_reason, usage=self._usage()))
        elif kind == "error":
            err = event.get("error") or {}
            etype = str(err.get("type") or "")
            message = str(err.get("message") or "The provider reported an error.")
            cls = _error_class(200, etype, message, err.get("details"))
            self.error = errors.InStreamError(errors.safe_message(message), provider=self.provider,
                                              model=self.model, http_status=200, retryable=cls.retryable,
                                              provider_code=etype)


def _blocks(message: Message) -> list[dict[str, Any]]:
    """One domain message as Messages content blocks."""
    if message.role == "tool":
        blocks: list[dict[str, Any]] = []
        for result in message.tool_results:
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": result.call_id,
                                     "content": json_text(result.output)}
            if result.is_error:
                block["is_error"] = True
            blocks.append(block)
        if message.content:
            blocks.append({"type": "text", "text": message.content})
        return blocks
    # Images and documents before the text that refers to them (Anthropic's recommendation).
    blocks = [_attachment_block(a) for a in message.attachments]
    if message.content or not (message.tool_calls or message.attachments):
        blocks.append({"type": "text", "text": message.content})
    blocks.extend({"type": "tool_use", "id": c.id, "name": c.name, "input": input_object(c.input)}
                  for c in message.tool_calls)
    return blocks


def _attachment_block(attachment: Attachment) -> dict[str, Any]:
    """An `image` or `document` block with base64 data."""
    source = {"type": "base64", "media_type": attachment.media_type, "data": base64_data(attachment)}
    if attachment.is_image:
        return {"type": "image", "source": source}
    block: dict[str, Any] = {"type": "document", "source": source}
    if attachment.filename:
        block["title"] = attachment.filename
    return block


def _messages(request: ModelRequest) -> list[dict[str, Any]]:
    """Messages with tool results in user turns and consecutive same-role turns merged (the API requires
    alternation); a turn of text only is sent as one string, its parts joined by a blank line.
    """
    turns = alternate(({"role": "assistant" if m.role == "assistant" else "user", "content": _blocks(m)}
                       for m in request.messages), first=lambda block: block["type"] == "tool_result")
    for turn in turns:
        if all(block["type"] == "text" for block in turn["content"]):
            turn["content"] = "\n\n".join(block["text"] for block in turn["content"])
    return turns


def _tool_choice(choice: str) -> dict[str, Any]:
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice}


class AnthropicProvider(http.HTTPProvider):
    """The Anthropic Messages API (or a compatible gateway at another base URL).

    Probe: `GET /v1/models?limit=1`, free, and proves both the key and the endpoint.
    """

    provider_name = "anthropic"
    default_base_url = "https://api.anthropic.com"
    probe_path = "/v1/models?limit=1"
    parser_class = AnthropicStreamParser
    classify = staticmethod(error_from_response)

    def _headers(self) -> dict[str, str]:
        return {**super()._headers(), "anthropic-version": API_VERSION}

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def stream_url(self, request: ModelRequest) -> str:
        return f"{self.base_url}/v1/messages"

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of `POST /v1/messages` for this request (no seed: the API has none)."""
        refuse_json_output(request, self.name)
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_output_tokens or DEFAULT_MAX_TOKENS,
            "messages": _messages(request),
            "stream": True,
        }
        if request.tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                             for t in request.tools]
        choice = tool_choice(request)
        if choice is not None:
            body["tool_choice"] = _tool_choice(choice)
        if request.system:
            body["system"] = request.system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        if request.top_p is not None:
            body["top_p"] = request.top_p
        body.update(provider_options(request, "anthropic", ANTHROPIC_OPTIONS))
        return body


def from_settings(settings: Settings) -> AnthropicProvider | None:
    """The provider when a key (or a key secret name) is configured, else None (disabled)."""
    from chatcore.secrets import api_key_getter

    key = api_key_getter(settings, "anthropic", settings.anthropic_api_key)
    if key is None:
        return None
    return AnthropicProvider(api_key=key, base_url=settings.anthropic_base_url)
