"""Ollama's native chat API (`POST /api/chat`, NDJSON).

Wire rules handled: one JSON object per LF-terminated line, `message.thinking` as reasoning,
usage only on the `done: true` line (`prompt_eval_count` / `eval_count`), an `{"error": ...}`
line inside a 200 body, EOF before `done: true` as truncation, and `message.tool_calls` (whole,
`arguments` an object, an id only from recent versions) as tool calls. Requests: `tools`, the
assistant's `tool_calls`, and one `role: tool` message per result. (Ollama's OpenAI-compatible
`/v1` endpoint works through the OpenAI adapter instead.)
"""

from __future__ import annotations

import contextlib
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
from chatcore.messages import Message, ModelRequest
from chatcore.providers import http
from chatcore.providers.base import json_output, provider_options
from chatcore.providers.decoders.ndjson import NDJSONDecoder
from chatcore.providers.request_body import base64_data, input_object, json_text, tool_choice
from chatcore.providers.streaming import ToolCallStreams, malformed, token_count, truncated
from chatcore.settings import Settings

# Top-level body fields, and model parameters that go into `options`.
OLLAMA_OPTIONS = frozenset({"think", "keep_alive", "format", "options"})

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length"}


def error_from_response(status: int, headers: Mapping[str, str], text: str, *, provider: str = "ollama",
                        model: str = "") -> errors.ProviderError:
    """Classify an HTTP error: `{"error": "..."}` with the HTTP status deciding the class."""
    payload = http.json_or_none(text)
    message = str(payload.get("error")) if isinstance(payload, dict) and payload.get("error") else (
        f"HTTP {status} from the provider.")
    cls = http.classify_status(status, message=message)
    return cls(errors.safe_message(message), provider=provider, model=model, http_status=status,
               retry_after=http.parse_retry_after(headers))


class OllamaStreamParser:
    """`/api/chat` NDJSON bytes to events."""

    def __init__(self, provider: str = "ollama", model: str = "") -> None:
        self.provider = provider
        self.model = model
        self.error: errors.ProviderError | None = None
        self._decoder = NDJSONDecoder()
        self._done = False
        self._info_sent = False
        self._tools = ToolCallStreams()

    def feed(self, chunk: bytes) -> list[ProviderEvent]:
        if self.error is not None or self._done:
            return []
        try:
            lines = self._decoder.feed(chunk)
        except ValueError:
            self._malformed()
            return []
        return self._lines(lines)

    def close(self) -> list[ProviderEvent]:
        out: list[ProviderEvent] = []
        if self.error is None and not self._done:
            # A last line cut mid-JSON means the connection dropped: reported as truncation below.
            with contextlib.suppress(ValueError):
                out = self._lines(self._decoder.flush())
        if self.error is not None:
            raise self.error
        if not self._done:
            raise truncated(self.provider, self.model)
        return out

    def _malformed(self) -> None:
        self.error = malformed(self.provider, self.model)

    def _lines(self, lines: list[Any]) -> list[ProviderEvent]:
        out: list[ProviderEvent] = []
        for line in lines:
            if not isinstance(line, dict):
                continue
            if line.get("error"):
                # Ollama can only report a failure after output started this way; it is a runner crash.
                self.error = errors.InStreamError(
                    errors.safe_message(str(line["error"])), provider=self.provider, model=self.model,
                    http_status=200, retryable=True, provider_code="ollama_error")
                break
            if not self._info_sent and line.get("model"):
                self._info_sent = True
                out.append(ResponseInfo(model=line["model"]))
            message = line.get("message") or {}
            thinking = message.get("thinking")
            if isinstance(thinking, str) and thinking:
                out.append(ReasoningDelta(thinking))
            content = message.get("content")
            if isinstance(content, str) and content:
                out.append(TextDelta(content))
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    call_id = call.get("id") if isinstance(call.get("id"), str) else None
                    arguments = function.get("arguments")
                    if isinstance(arguments, str):  # not what Ollama documents, but keep what was sent
                        arguments = http.json_or_none(arguments) or arguments
                    out.extend(self._tools.whole(call_id, function["name"],
                                                 {} if arguments is None else arguments))
            if line.get("done"):
                self._done = True
                usage = Usage(input_tokens=token_count(line.get("prompt_eval_count")),
                              output_tokens=token_count(line.get("eval_count")))
                raw = line.get("done_reason")
                reason = _FINISH.get(raw or "stop", "other")
                if reason == "stop" and self._tools.count:
                    reason = "tool_calls"  # Ollama says "stop" after tool calls
                out.append(UsageReport(usage))
                out.append(Finish(reason=reason, raw_reason=raw, usage=usage))
                break
        return out


def _messages(message: Message) -> list[dict[str, Any]]:
    """One domain message as `/api/chat` messages (a tool turn is one message per result)."""
    if message.role == "tool":
        return [{"role": "tool", "content": json_text(r.output), "tool_name": r.name} for r in message.tool_results]
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.attachments:
        if any(not a.is_image for a in message.attachments):  # routing skips Ollama for these (no `pdf`)
            raise errors.RequestError("Ollama accepts images only, not documents.")
        out["images"] = [base64_data(a) for a in message.attachments]
    if message.tool_calls:
        out["tool_calls"] = [{"function": {"name": c.name, "arguments": input_object(c.input)}}
                             for c in message.tool_calls]
    return [out]


class OllamaProvider(http.HTTPProvider):
    """A local or remote Ollama server; no key locally, an optional Bearer key for Ollama Cloud.

    Probe: `GET /api/version`, instant, loads no model.
    """

    accept = "application/x-ndjson"
    provider_name = "ollama"
    default_base_url = "http://127.0.0.1:11434"
    probe_path = "/api/version"
    parser_class = OllamaStreamParser
    classify = staticmethod(error_from_response)

    def stream_url(self, request: ModelRequest) -> str:
        return f"{self.base_url}/api/chat"

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of `POST /api/chat` for this request."""
        extra = provider_options(request, "ollama", OLLAMA_OPTIONS)
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for message in request.messages:
            messages.extend(_messages(message))
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_output_tokens is not None:
            options["num_predict"] = request.max_output_tokens
        if request.stop:
            options["stop"] = list(request.stop)
        if request.top_p is not None:
            options["top_p"] = request.top_p
        if request.seed is not None:
            options["seed"] = request.seed
        options.update(extra.pop("options", None) or {})
        body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": True}
        # Ollama has no tool_choice: "none" withholds the tools, any other choice offers them.
        if request.tools and tool_choice(request) != "none":
            body["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.input_schema}}
                for t in request.tools]
        fmt = json_output(request)
        if fmt is not None:  # "json", or the JSON schema itself
            schema = (fmt.get("json_schema") or {}).get("schema")
            body["format"] = schema if fmt.get("type") == "json_schema" and schema is not None else "json"
        if options:
            body["options"] = options
        body.update(extra)
        return body


def from_settings(settings: Settings) -> OllamaProvider | None:
    """The provider when `OLLAMA_BASE_URL` is set, else None (disabled)."""
    if not settings.ollama_base_url:
        return None
    return OllamaProvider(base_url=settings.ollama_base_url)
