"""OpenAI Chat Completions: the streamed `chat.completion.chunk` SSE and the `chat.completion` object.

Streamed: a role delta first, a content delta per text delta (`reasoning_content` per reasoning
delta, as DeepSeek, vLLM and LiteLLM send it), a chunk with the mapped `finish_reason`, with
`stream_options.include_usage` a usage chunk (`choices: []`), then `data: [DONE]`. A failure after
the first token ends the stream with OpenAI's in-stream error event (`data: {"error": {...}}`,
which the SDKs raise), never with a `finish_reason`.

Tool calls: only the calls of the client's own tools (the request's `tools`) are OpenAI tool calls.
Each is sent once its input is complete and accepted (an input that fails the tool's schema goes back
to the model, as on `/api/chat`, and is never shown), as OpenAI streams them: a delta with the call's
`index`, `id`, `type` and `function.name` with empty `arguments`, then the argument fragments as the
model produced them; the turn then ends with `finish_reason: "tool_calls"`. The operator's server
tools run inside the turn (service/steps.py): their calls and outputs are not sent, only the text
the model writes around them. A turn that ends with `tool_calls` from the model but no client call
to show (the step limit after server tools, or a server tool waiting for an approval this API cannot
carry) finishes with `stop` (`x_chat.approval_required` marks the latter).

Usage is always present where asked: the provider's final report, or an estimate when it sent none.
The final chunk (and the completion object) also carry `x_chat`: deployment, fallbacks, cost and
cache status, the backend's own additions (clients ignore unknown fields).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from chatcore.api.encoders.wire_json import DONE, SSE_HEADERS, json_bytes
from chatcore.api.errors import openai_error_body
from chatcore.events import (
    ErrorEvent,
    Event,
    Finish,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolApprovalRequest,
    ToolInputDelta,
    ToolInputReady,
    ToolInputStart,
    Usage,
    UsageReport,
)
from chatcore.streams import closing
from chatcore.tokens import DEFAULT_CHARS_PER_TOKEN

HEADERS = SSE_HEADERS

# Encoding itself failed mid-stream: OpenAI's in-stream error shape (the stream ends there, as the
# other errors here do), never a clean finish.
FAILURE = (b'data: {"error": {"message": "The response failed unexpectedly.", "type": "server_error", '
           b'"param": null, "code": "internal_error"}}\n\n')

# Internal finish reasons to OpenAI's. `error` is not a finish there: it becomes the error event.
FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content_filter",
                  "tool_calls": "tool_calls", "other": "stop"}

ENDED_UNEXPECTEDLY = ErrorEvent(message="The response ended unexpectedly.", code="provider_stream_truncated",
                                retryable=True)


@dataclass(frozen=True, slots=True)
class Completion:
    """What every chunk of one completion repeats, and the prompt estimate for a missing usage report."""

    created: int
    prompt_tokens_estimate: int = 0
    client_tools: frozenset[str] = frozenset()  # the names of the request's tools: their calls are shown


@dataclass(frozen=True, slots=True)
class ClientCall:
    """A client tool call, ready to show: its place among the turn's calls and its argument fragments."""

    index: int
    id: str
    name: str
    fragments: tuple[str, ...]

    @property
    def arguments(self) -> str:
        return "".join(self.fragments)


class ClientCalls:
    """Collects the client tool calls of a turn from the events (server tools' calls are left out)."""

    def __init__(self, client_tools: frozenset[str]) -> None:
        self.client_tools = client_tools
        self._fragments: dict[str, list[str]] = {}
        self.ready: list[ClientCall] = []
        self.approval_required = False

    def add(self, event: Event) -> ClientCall | None:
        """Take a tool event; the call it completes, when that is a client call to show."""
        if isinstance(event, ToolInputStart):
            if event.name in self.client_tools:
                self._fragments[event.call_id] = []
        elif isinstance(event, ToolInputDelta):
            if event.call_id in self._fragments:
                self._fragments[event.call_id].append(event.delta)
        elif isinstance(event, ToolInputReady):
            fragments = self._fragments.pop(event.call_id, None)
            if event.name not in self.client_tools or event.error is not None:
                return None  # a server tool's call, or an input the model is told about and retries
            if not fragments or not "".join(fragments).strip():
                fragments = [json.dumps(event.input, ensure_ascii=False, separators=(",", ":"))]
            call = ClientCall(len(self.ready), event.call_id, event.name, tuple(fragments))
            self.ready.append(call)
            return call
        elif isinstance(event, ToolApprovalRequest):
            self.approval_required = True
        return None

    def finish_reason(self, reason: str) -> str:
        if self.ready:
            return "tool_calls"
        mapped = FINISH_REASONS.get(reason, "stop")
        return "stop" if mapped == "tool_calls" else mapped

    def extras(self) -> dict[str, Any]:
        return {"approval_required": True} if self.approval_required and not self.ready else {}

    def chars(self) -> int:
        return sum(len(c.arguments) + len(c.name) for c in self.ready)


def completion_id(message_id: str) -> str:
    return "chatcmpl-" + message_id.removeprefix("msg_")


def usage_object(usage: Usage | None, prompt_estimate: int, completion_chars: int) -> dict[str, Any]:
    """OpenAI's `usage`; counts the provider did not report are estimated, details only where reported."""
    usage = usage or Usage()
    prompt = usage.input_tokens if usage.input_tokens is not None else prompt_estimate
    completion = usage.output_tokens if usage.output_tokens is not None else \
        (int(completion_chars / DEFAULT_CHARS_PER_TOKEN) + 1 if completion_chars else 0)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if usage.cached_input_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_input_tokens}
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def error_payload(event: ErrorEvent) -> dict[str, Any]:
    """The in-stream (and non-streamed) error object for a failure after the first token."""
    return openai_error_body(event.message, 503 if event.retryable else 502, event.code)


def backend_extras(start: Start | None, metadata: dict[str, object]) -> dict[str, Any]:
    """`x_chat`: which deployment answered, who failed before it, the cost, and the cache status."""
    extras: dict[str, Any] = {}
    if start is not None:
        extras["deployment"] = start.deployment or f"{start.provider}/{start.model}"
    for key, name in (("fallbacks", "fallbacks"), ("costUsd", "cost_usd"), ("cache", "cache")):
        if key in metadata:
            extras[name] = metadata[key]
    return extras


def _model(start: Start | None) -> str:
    return f"{start.provider}/{start.model}" if start is not None else ""


async def encode_chat_completion_chunks(events: AsyncIterator[Event], completion: Completion, *,
                                        include_usage: bool = False) -> AsyncIterator[bytes]:
    """Encode events as `chat.completion.chunk` SSE; ends with `[DONE]`, or with an error event."""
    start: Start | None = None
    usage: Usage | None = None
    chars = 0
    head: dict[str, Any] = {}
    calls = ClientCalls(completion.client_tools)

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        payload = {**head, "choices": choices, **extra}
        if include_usage and "usage" not in payload:
            payload["usage"] = None  # as OpenAI: every chunk has the field, only the last one a value
        return b"data: " + json_bytes(payload) + b"\n\n"

    def delta(fields: dict[str, Any]) -> bytes:
        return chunk([{"index": 0, "delta": fields, "logprobs": None, "finish_reason": None}])

    def failed(event: ErrorEvent) -> bytes:
        return b"data: " + json_bytes(error_payload(event)) + b"\n\n"

    async with closing(events) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                chars += len(event.text)
                yield delta({"content": event.text})
            elif isinstance(event, ReasoningDelta):
                yield delta({"reasoning_content": event.text})
            elif isinstance(event, Start):
                start = event
                head = {"id": completion_id(event.message_id), "object": "chat.completion.chunk",
                        "created": completion.created, "model": _model(event)}
                yield delta({"role": "assistant", "content": ""})
            elif isinstance(event, UsageReport):
                usage = event.usage
            elif isinstance(event, ToolInputStart | ToolInputDelta | ToolInputReady | ToolApprovalRequest):
                call = calls.add(event)
                if call is not None:  # a client tool call: its head, then its argument fragments
                    yield delta({"tool_calls": [{"index": call.index, "id": call.id, "type": "function",
                                                 "function": {"name": call.name, "arguments": ""}}]}) + b"".join(
                        delta({"tool_calls": [{"index": call.index, "function": {"arguments": fragment}}]})
                        for fragment in call.fragments)
            elif isinstance(event, Finish):
                if event.reason == "error":  # the provider itself ended in error: never a clean stop
                    yield failed(ErrorEvent(message="The provider ended the answer with an error.",
                                            code="provider_stream_error", retryable=True))
                    return
                out = chunk([{"index": 0, "delta": {}, "logprobs": None,
                              "finish_reason": calls.finish_reason(event.reason)}],
                            x_chat={**backend_extras(start, event.metadata), **calls.extras()})
                if include_usage:
                    out += chunk([], usage=usage_object(event.usage or usage, completion.prompt_tokens_estimate,
                                                        chars + calls.chars()))
                yield out + DONE
                return
            elif isinstance(event, ErrorEvent):
                yield failed(event)
                return
        yield failed(ENDED_UNEXPECTEDLY)


async def collect_chat_completion(events: AsyncIterator[Event], completion: Completion
                                  ) -> dict[str, Any] | ErrorEvent:
    """The whole answer as one `chat.completion` object, or the `ErrorEvent` that ended it."""
    start: Start | None = None
    usage: Usage | None = None
    text: list[str] = []
    reasoning: list[str] = []
    calls = ClientCalls(completion.client_tools)
    async with closing(events) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, ReasoningDelta):
                reasoning.append(event.text)
            elif isinstance(event, Start):
                start = event
            elif isinstance(event, UsageReport):
                usage = event.usage
            elif isinstance(event, ToolInputStart | ToolInputDelta | ToolInputReady | ToolApprovalRequest):
                calls.add(event)
            elif isinstance(event, ErrorEvent):
                return event
            elif isinstance(event, Finish):
                if event.reason == "error":
                    return ErrorEvent(message="The provider ended the answer with an error.",
                                      code="provider_stream_error", retryable=True)
                content = "".join(text)
                message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
                if calls.ready:  # as OpenAI: content null when the answer is only tool calls
                    message["content"] = content or None
                    message["tool_calls"] = [{"id": c.id, "type": "function",
                                              "function": {"name": c.name, "arguments": c.arguments}}
                                             for c in calls.ready]
                if reasoning:
                    message["reasoning_content"] = "".join(reasoning)
                return {
                    "id": completion_id(start.message_id) if start else completion_id(""),
                    "object": "chat.completion",
                    "created": completion.created,
                    "model": _model(start),
                    "choices": [{"index": 0, "message": message, "logprobs": None,
                                 "finish_reason": calls.finish_reason(event.reason)}],
                    "usage": usage_object(event.usage or usage, completion.prompt_tokens_estimate,
                                          len(content) + calls.chars()),
                    "x_chat": {**backend_extras(start, event.metadata), **calls.extras()},
                }
    return ENDED_UNEXPECTEDLY


__all__ = ["HEADERS", "Completion", "collect_chat_completion", "encode_chat_completion_chunks", "usage_object"]
