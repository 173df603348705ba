"""Google Gemini API streaming (`models/{model}:streamGenerateContent?alt=sse`).

Wire rules handled: CRLF framing, no end marker (a `finishReason` or a blocked prompt ends the
answer; EOF without either is truncation), `usageMetadata` as a running snapshot on every chunk
(the last one wins), `thought: true` parts as reasoning, the raw pretty-printed JSON error blob
Gemini appends without a `data:` prefix, safety stops and blocked prompts as
`Finish(reason="content_filter")`, `RetryInfo.retryDelay` on 429s, and `functionCall` parts as
whole tool calls (Gemini sends no call id unless it has one: an id is made up; a `STOP` after
function calls is a `tool_calls` finish). Requests: `functionDeclarations` with the JSON Schema
as `parametersJsonSchema`, the model's `functionCall` parts (with their `thoughtSignature`) and
`functionResponse` parts in a user turn, consecutive same-role turns merged. Image-generating models
answer with `inlineData {mimeType, data (base64)}` parts: each is one `FileOutput` (invalid base64 is
a malformed stream).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from chatcore import errors
from chatcore.events import (
    FileOutput,
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
from chatcore.providers.base import json_output, provider_options
from chatcore.providers.decoders.sse import RawLine, SSEDecoder, SSEEvent
from chatcore.providers.request_body import alternate, base64_data, input_object, tool_choice
from chatcore.providers.streaming import ToolCallStreams, malformed, token_count, truncated
from chatcore.settings import Settings

GEMINI_OPTIONS = frozenset({"generationConfig", "safetySettings", "thinkingConfig", "topP", "topK",
                            "cachedContent", "labels"})

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
}

_STATUS_CLASSES: dict[str, type[errors.ProviderError]] = {
    "UNAUTHENTICATED": errors.AuthenticationError,
    "PERMISSION_DENIED": errors.PermissionDeniedError,
    "NOT_FOUND": errors.ModelNotFoundError,
    "RESOURCE_EXHAUSTED": errors.RateLimitedError,
    "INTERNAL": errors.ServerError,
    "UNAVAILABLE": errors.OverloadedError,
    "DEADLINE_EXCEEDED": errors.ProviderTimeoutError,
}


def _retry_delay(details: object) -> float | None:
    """`details[@type=...RetryInfo].retryDelay`, a protobuf Duration such as `"41s"`."""
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            return http.parse_duration(detail.get("retryDelay"))
    return None


def _reasons(details: object) -> set[str]:
    return {str(d.get("reason")) for d in (details if isinstance(details, list) else ())
            if isinstance(d, dict) and d.get("reason")}


def classify_error(err: Mapping[str, Any], http_status: int) -> tuple[type[errors.ProviderError], float | None]:
    """The class for a Google RPC error object `{code, message, status, details}`, and its retry delay."""
    status_name = str(err.get("status") or "")
    code = err.get("code") if isinstance(err.get("code"), int) else http_status
    message = str(err.get("message") or "")
    details = err.get("details")
    if "API_KEY_INVALID" in _reasons(details) or status_name == "UNAUTHENTICATED":
        return errors.AuthenticationError, None
    if status_name == "INVALID_ARGUMENT":
        return http.classify_status(400, code=status_name, message=message), None
    if status_name in _STATUS_CLASSES:
        return _STATUS_CLASSES[status_name], _retry_delay(details)
    return http.classify_status(code or 500, code=status_name, message=message), _retry_delay(details)


def _error_object(payload: object) -> Mapping[str, Any] | None:
    if isinstance(payload, list) and payload:  # the array-wrapped form (no alt=sse, Vertex)
        payload = payload[0]
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return payload["error"]
    return None


def error_from_response(status: int, headers: Mapping[str, str], text: str, *, provider: str = "gemini",
                        model: str = "") -> errors.ProviderError:
    """Classify an HTTP error (pretty JSON `{"error": {...}}`, possibly array-wrapped)."""
    err = _error_object(http.json_or_none(text)) or {"message": f"HTTP {status} from the provider."}
    cls, delay = classify_error(err, status)
    retry_after = delay if delay is not None else http.parse_retry_after(headers)
    return cls(errors.safe_message(str(err.get("message") or "")), provider=provider, model=model,
               http_status=status, retry_after=retry_after, provider_code=str(err.get("status") or ""))


class GeminiStreamParser:
    """`streamGenerateContent?alt=sse` bytes to events."""

    def __init__(self, provider: str = "gemini", model: str = "") -> None:
        self.provider = provider
        self.model = model
        self.error: errors.ProviderError | None = None
        self._decoder = SSEDecoder()
        self._done = False
        self._usage: Usage | None = None
        self._info_sent = False
        self._raw: list[str] = []  # lines of a raw JSON blob outside SSE framing
        self._tools = ToolCallStreams()

    def feed(self, chunk: bytes) -> list[ProviderEvent]:
        if self.error is not None or self._done:
            return []
        return self._items(self._decoder.feed(chunk))

    def close(self) -> list[ProviderEvent]:
        out: list[ProviderEvent] = []
        if self.error is None and not self._done:
            out = self._items(self._decoder.flush())
        if self.error is None and self._raw:
            self.error = malformed(self.provider, self.model)
        if self.error is not None:
            raise self.error
        if not self._done:
            raise truncated(self.provider, self.model)
        return out

    def _items(self, items: list[SSEEvent | RawLine]) -> list[ProviderEvent]:
        out: list[ProviderEvent] = []
        for item in items:
            if isinstance(item, SSEEvent):
                self._chunk(http.json_or_none(item.data), out)
            else:
                self._raw_line(item.text)
            if self.error is not None or self._done:
                break
        return out

    def _raw_line(self, text: str) -> None:
        """Collect lines of a JSON blob sent without `data:` until they parse as a whole."""
        if not self._raw and not text.lstrip().startswith(("{", "[")):
            return  # stray non-SSE noise: ignore, as the SSE spec does
        self._raw.append(text)
        payload = http.json_or_none("\n".join(self._raw))
        if payload is not None:
            self._raw = []
            self._chunk(payload, [])
            if self.error is None:
                self.error = malformed(self.provider, self.model, "unexpected data")

    def _chunk(self, chunk: object, out: list[ProviderEvent]) -> None:
        err = _error_object(chunk)
        if err is not None:
            cls, delay = classify_error(err, 200)
            self.error = errors.InStreamError(
                errors.safe_message(str(err.get("message") or "")), provider=self.provider, model=self.model,
                http_status=200, retryable=cls.retryable, retry_after=delay,
                provider_code=str(err.get("status") or ""))
            return
        if not isinstance(chunk, dict):
            self.error = malformed(self.provider, self.model)
            return
        if not self._info_sent and (chunk.get("responseId") or chunk.get("modelVersion")):
            self._info_sent = True
            out.append(ResponseInfo(model=chunk.get("modelVersion"), response_id=chunk.get("responseId")))
        meta = chunk.get("usageMetadata")
        if isinstance(meta, dict):
            # A running snapshot (take the last, never sum). Thoughts are billed as output, so output
            # counts candidates + thoughts, and reasoning_tokens says how many of them were thoughts.
            thoughts = token_count(meta.get("thoughtsTokenCount"))
            self._usage = Usage(
                input_tokens=token_count(meta.get("promptTokenCount")),
                output_tokens=(token_count(meta.get("candidatesTokenCount")) or 0) + (thoughts or 0),
                cached_input_tokens=token_count(meta.get("cachedContentTokenCount")),
                reasoning_tokens=thoughts,
            )
            out.append(UsageReport(self._usage))
        candidates = chunk.get("candidates")
        if not candidates:
            block = (chunk.get("promptFeedback") or {}).get("blockReason")
            if block:
                self._done = True
                out.append(Finish(reason="content_filter", raw_reason=str(block), usage=self._usage,
                                  metadata={"block_reason": block}))
            return
        candidate = candidates[0] if isinstance(candidates, list) else None
        if not isinstance(candidate, dict):
            return
        for part in (candidate.get("content") or {}).get("parts") or ():
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str) and text:
                out.append(ReasoningDelta(text) if part.get("thought") else TextDelta(text))
            call = part.get("functionCall")
            if isinstance(call, dict) and isinstance(call.get("name"), str):
                signature = part.get("thoughtSignature")
                metadata = {"gemini": {"thoughtSignature": signature}} if isinstance(signature, str) else None
                call_id = call.get("id") if isinstance(call.get("id"), str) else None
                out.extend(self._tools.whole(call_id, call["name"], call.get("args") or {}, metadata))
            inline = part.get("inlineData")
            if isinstance(inline, dict) and not part.get("thought"):
                generated = self._file(inline)
                if generated is None:
                    return
                out.append(generated)
        finish = candidate.get("finishReason")
        if finish:
            self._done = True
            reason = _FINISH.get(finish, "other")
            if reason == "stop" and self._tools.count:
                reason = "tool_calls"  # Gemini says STOP after function calls
            out.append(Finish(reason=reason, raw_reason=finish, usage=self._usage))

    def _file(self, inline: dict[str, Any]) -> FileOutput | None:
        """A generated file from an `inlineData` part; None (and a malformed stream) when unreadable."""
        mime, data = inline.get("mimeType"), inline.get("data")
        try:
            if not isinstance(mime, str) or not mime or not isinstance(data, str):
                raise ValueError("inlineData without mimeType or data")
            raw = base64.b64decode(data, validate=True)
        except (ValueError, binascii.Error):
            self.error = malformed(self.provider, self.model, "unreadable inlineData")
            return None
        return FileOutput(media_type=mime, data=raw)


def _parts(message: Message) -> list[dict[str, Any]]:
    """One domain message as Gemini parts."""
    parts: list[dict[str, Any]] = []
    if message.role == "tool":
        for result in message.tool_results:
            # Gemini's documented keys: `output` for the result, `error` for a failure.
            response = {"error": result.output} if result.is_error else {"output": result.output}
            parts.append({"functionResponse": {"name": result.name, "response": response}})
        if message.content:
            parts.append({"text": message.content})
        return parts
    parts.extend({"inlineData": {"mimeType": a.media_type, "data": base64_data(a)}} for a in message.attachments)
    if message.content or not (message.tool_calls or message.attachments):
        parts.append({"text": message.content})
    for call in message.tool_calls:
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": input_object(call.input)}}
        signature = (call.metadata.get("gemini") or {}).get("thoughtSignature")
        if signature:
            part["thoughtSignature"] = signature  # Gemini 3 refuses function calls sent back without it
        parts.append(part)
    return parts


def _contents(request: ModelRequest) -> list[dict[str, Any]]:
    """Turns with Gemini's `model` role (tool results in user turns), same-role turns merged into one."""
    return alternate(({"role": "model" if m.role == "assistant" else "user", "parts": _parts(m)}
                      for m in request.messages), parts="parts",
                     first=lambda part: "functionResponse" in part)


def _tool_config(choice: str) -> dict[str, Any]:
    if choice in ("auto", "none"):
        return {"functionCallingConfig": {"mode": choice.upper()}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice]}}


class GeminiProvider(http.HTTPProvider):
    """The Gemini API (AI Studio `generativelanguage`), authenticated by `x-goog-api-key`.

    Probe: `GET /v1beta/models?pageSize=1`, free, and proves both the key and the endpoint.
    """

    provider_name = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com"
    probe_path = "/v1beta/models?pageSize=1"
    parser_class = GeminiStreamParser
    classify = staticmethod(error_from_response)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}  # a header, never `?key=`, so URLs in logs hold no secret

    def stream_url(self, request: ModelRequest) -> str:
        return f"{self.base_url}/v1beta/models/{quote(request.model, safe='')}:streamGenerateContent?alt=sse"

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of `streamGenerateContent` for this request."""
        options = provider_options(request, "gemini", GEMINI_OPTIONS)
        config: dict[str, Any] = {}
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.max_output_tokens is not None:
            config["maxOutputTokens"] = request.max_output_tokens
        if request.stop:
            config["stopSequences"] = list(request.stop)
        if request.top_p is not None:
            config["topP"] = request.top_p
        if request.seed is not None:
            config["seed"] = request.seed
        fmt = json_output(request)
        if fmt is not None:
            config["responseMimeType"] = "application/json"
            schema = (fmt.get("json_schema") or {}).get("schema")
            if fmt.get("type") == "json_schema" and schema is not None:
                config["responseJsonSchema"] = schema
        for key in ("thinkingConfig", "topP", "topK"):
            if key in options:
                config[key] = options.pop(key)
        config.update(options.pop("generationConfig", None) or {})
        body: dict[str, Any] = {"contents": _contents(request)}
        if request.tools:
            body["tools"] = [{"functionDeclarations": [
                {"name": t.name, "description": t.description, "parametersJsonSchema": t.input_schema}
                for t in request.tools]}]
        choice = tool_choice(request)
        if choice is not None:
            body["toolConfig"] = _tool_config(choice)
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        if config:
            body["generationConfig"] = config
        body.update(options)
        return body


def from_settings(settings: Settings) -> GeminiProvider | None:
    """The provider when a key (or a key secret name) is configured, else None (disabled)."""
    from chatcore.secrets import api_key_getter

    key = api_key_getter(settings, "gemini", settings.gemini_api_key)
    if key is None:
        return None
    return GeminiProvider(api_key=key, base_url=settings.gemini_base_url)
