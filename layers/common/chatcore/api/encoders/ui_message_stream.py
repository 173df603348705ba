"""The Vercel AI SDK UI message stream protocol (what `useChat` reads), version v1.

SSE framing, one JSON chunk per event, `data: [DONE]` at the end. See
shared/reference/ai-sdk-protocol.md for the chunk schema this follows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from chatcore.api.encoders.wire_json import DONE, SSE_HEADERS, json_bytes
from chatcore.events import (
    ErrorEvent,
    Event,
    FilePart,
    Finish,
    ReasoningDelta,
    ResponseInfo,
    Start,
    StepFinish,
    StepStart,
    TextDelta,
    ToolApprovalRequest,
    ToolDenied,
    ToolInputDelta,
    ToolInputReady,
    ToolInputStart,
    ToolOutput,
    ToolOutputError,
    Usage,
    UsageReport,
)
from chatcore.streams import closing

HEADERS = {**SSE_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}

_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "error": "error",
    "other": "other",
}


def _chunk(payload: dict[str, Any]) -> bytes:
    return b"data: " + json_bytes(payload) + b"\n\n"


# The ending when encoding itself fails mid-stream (the client stops at `error`; the rest is protocol).
FAILURE = (b'data: {"type":"error","errorText":"The response failed unexpectedly."}\n\n'
           b'data: {"type":"finish","finishReason":"error"}\n\n' + DONE)


_MERGED_PREFIXES = (b'data: {"type":"text-delta",', b'data: {"type":"reasoning-delta",')
_DELTA_KEYS = ("type", "id", "delta")


def compact(data: bytes) -> bytes:
    """`data` (whole UI message stream events) with each run of text or reasoning deltas of one part
    merged into one delta, and SSE comments (keep-alive pings) dropped; every other chunk is kept
    as it is, in order. A client reading it rebuilds the same message from fewer, larger deltas.

    Only the two delta types are parsed (their JSON starts with the type, as `_chunk` writes it).
    """
    out: list[bytes] = []
    run: dict[str, Any] | None = None  # the delta being merged

    def end_run() -> None:
        nonlocal run
        if run is not None:
            out.append(_chunk(run))
            run = None

    for event in data.split(b"\n\n"):
        if not event or event.startswith(b":"):
            continue
        if event.startswith(_MERGED_PREFIXES):
            chunk = json.loads(event[6:])
            if tuple(chunk) == _DELTA_KEYS:
                if run is not None and run["type"] == chunk["type"] and run["id"] == chunk["id"]:
                    run["delta"] += chunk["delta"]
                else:
                    end_run()
                    run = chunk
                continue
        end_run()
        out.append(event + b"\n\n")
    end_run()
    return b"".join(out)


def message_metadata(start: Start | None, info: ResponseInfo | None, usage: Usage | None,
                     extra: dict[str, object]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if start is not None:
        metadata["model"] = f"{start.provider}/{start.model}"
        metadata["provider"] = start.provider
        if start.deployment:
            metadata["deployment"] = start.deployment
        # The same shape as the router's finish metadata, so the client's merge keeps one form.
        metadata["fallbacks"] = [{"deployment": d, "error": e} for d, _, e in
                                 (f.rpartition(":") for f in start.fallbacks)]
    if info is not None and info.model:
        metadata["providerModel"] = info.model
    if usage is not None:
        metadata["usage"] = usage.as_dict()
    metadata.update(extra)
    return metadata


def tool_chunk(event: Event) -> dict[str, Any] | None:
    """The UI message stream chunk of a tool event (the AI SDK's field names), or None."""
    if isinstance(event, ToolInputStart):
        return {"type": "tool-input-start", "toolCallId": event.call_id, "toolName": event.name}
    if isinstance(event, ToolInputDelta):
        return {"type": "tool-input-delta", "toolCallId": event.call_id, "inputTextDelta": event.delta}
    if isinstance(event, ToolInputReady):
        chunk: dict[str, Any] = {"type": "tool-input-available", "toolCallId": event.call_id,
                                 "toolName": event.name, "input": event.input}
        if event.metadata:
            chunk["providerMetadata"] = event.metadata
        if event.error is not None:
            chunk.update(type="tool-input-error", errorText=event.error)
        return chunk
    if isinstance(event, ToolOutput):
        return {"type": "tool-output-available", "toolCallId": event.call_id, "output": event.output}
    if isinstance(event, ToolOutputError):
        return {"type": "tool-output-error", "toolCallId": event.call_id, "errorText": event.message}
    if isinstance(event, ToolApprovalRequest):
        return {"type": "tool-approval-request", "approvalId": event.approval_id, "toolCallId": event.call_id}
    if isinstance(event, ToolDenied):
        return {"type": "tool-output-denied", "toolCallId": event.call_id}
    return None


async def encode_ui_message_stream(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    """Encode events as UI message stream chunks; always ends with `finish` (or `error`) and `[DONE]`.

    Each model call of the turn is one step (`start-step` ... `finish-step`, from `StepStart` /
    `StepFinish`; a stream without them is one step). Tool calls are the AI SDK's tool chunks:
    `tool-input-start` / `-delta` / `-available` (or `tool-input-error`), then
    `tool-output-available` / `-error`, `tool-approval-request`, `tool-output-denied`. A generated
    file is a `file` chunk (`mediaType`, `url`: a presigned GET).
    """
    start: Start | None = None
    info: ResponseInfo | None = None
    usage: Usage | None = None
    open_part: tuple[str, str] | None = None  # ("text" | "reasoning", id)
    part_count = 0
    step_open = False
    any_step = False
    # `start` goes out in the same write as the first token, which follows it at once anyway.
    pending = b""

    def close_part() -> bytes:
        nonlocal open_part
        if open_part is None:
            return b""
        kind, part_id = open_part
        open_part = None
        return _chunk({"type": f"{kind}-end", "id": part_id})

    def open_step() -> bytes:
        nonlocal step_open, any_step
        if step_open:
            return b""
        step_open = any_step = True
        return _chunk({"type": "start-step"})

    def close_step() -> bytes:
        nonlocal step_open
        if not step_open:
            return b""
        step_open = False
        return close_part() + _chunk({"type": "finish-step"})

    async with closing(events) as stream:
        async for event in stream:
            if isinstance(event, TextDelta | ReasoningDelta):
                kind = "text" if isinstance(event, TextDelta) else "reasoning"
                head, pending = pending + open_step(), b""
                if open_part is None or open_part[0] != kind:
                    head += close_part()
                    open_part = (kind, f"{kind[0]}{part_count}")
                    part_count += 1
                    head += _chunk({"type": f"{kind}-start", "id": open_part[1]})
                yield head + _chunk({"type": f"{kind}-delta", "id": open_part[1], "delta": event.text})
            elif isinstance(event, Start):
                start = event
                pending += _chunk({"type": "start", "messageId": event.message_id,
                                   "messageMetadata": message_metadata(event, None, None, {})})
            elif isinstance(event, StepStart):
                pending += close_step() + open_step()
            elif isinstance(event, StepFinish):
                head, pending = pending, b""
                yield head + open_step() + close_step()
            elif (chunk := tool_chunk(event)) is not None:
                head, pending = pending, b""
                # Tool outputs between steps (or before the first one, in a continued turn) need no step.
                step = open_step() if isinstance(event, ToolInputStart | ToolInputDelta | ToolInputReady) else b""
                yield head + step + close_part() + _chunk(chunk)
            elif isinstance(event, FilePart):
                # A generated file: its presigned URL (never the bytes), inside the step that made it.
                head, pending = pending + open_step(), b""
                yield head + close_part() + _chunk({"type": "file", "mediaType": event.media_type, "url": event.url})
            elif isinstance(event, UsageReport):
                usage = event.usage
            elif isinstance(event, ResponseInfo):
                info = event
            elif isinstance(event, Finish):
                metadata = message_metadata(start, info, event.usage or usage, event.metadata)
                yield pending + (b"" if any_step else open_step()) + close_step() + _chunk(
                    {"type": "finish", "finishReason": _FINISH_REASONS[event.reason], "messageMetadata": metadata}
                ) + DONE
                return
            elif isinstance(event, ErrorEvent):
                metadata = message_metadata(start, info, event.usage or usage, event.metadata)
                metadata["incomplete"] = True
                head = pending + (b"" if step_open or any_step else open_step())
                tail = _chunk({"type": "finish-step"}) if step_open else b""
                yield head + _chunk({"type": "error", "errorText": event.message}) + tail + _chunk(
                    {"type": "finish", "finishReason": "error", "messageMetadata": metadata}) + DONE
                return
        # The event source ended without Finish or ErrorEvent: say so rather than end silently.
        yield pending + _chunk({"type": "error", "errorText": "The response ended unexpectedly."}) + DONE
