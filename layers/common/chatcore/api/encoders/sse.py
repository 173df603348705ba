"""The classic hand-written SSE protocol, for clients without the AI SDK.

`data: {"content": "..."}` per text delta, `data: {"error": "..."}` on failure, `data: [DONE]`.
Tool activity is `data: {"tool": {...}}`: the UI message stream's tool chunk without its `tool-`
prefix (`{"type": "input-available", "toolCallId", "toolName", "input"}`, `input-error`,
`output-available` with `output`, `output-error` with `errorText`, `approval-request` with
`approvalId`, `output-denied`); a generated file is `data: {"file": {"mediaType", "url"}}`; clients
that only read `content` still get the text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from chatcore.api.encoders.ui_message_stream import tool_chunk
from chatcore.api.encoders.wire_json import DONE, SSE_HEADERS, json_bytes
from chatcore.events import ErrorEvent, Event, FilePart, Finish, TextDelta, ToolInputDelta, ToolInputStart
from chatcore.streams import closing

HEADERS = SSE_HEADERS

FAILURE = b'data: {"error": "The response failed unexpectedly."}\n\n' + DONE  # encoding itself failed


async def encode_sse(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    async with closing(events) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                yield b"data: " + json_bytes({"content": event.text}) + b"\n\n"
            elif isinstance(event, FilePart):
                yield b"data: " + json_bytes({"file": {"mediaType": event.media_type, "url": event.url}}) + b"\n\n"
            elif isinstance(event, Finish):
                yield DONE
                return
            elif isinstance(event, ErrorEvent):
                yield b"data: " + json_bytes({"error": event.message}) + b"\n\n" + DONE
                return
            elif not isinstance(event, ToolInputStart | ToolInputDelta) and (chunk := tool_chunk(event)):
                tool = {**chunk, "type": chunk["type"].removeprefix("tool-")}
                yield b"data: " + json_bytes({"tool": tool}) + b"\n\n"
        yield b"data: " + json_bytes({"error": "The response ended unexpectedly."}) + b"\n\n" + DONE
