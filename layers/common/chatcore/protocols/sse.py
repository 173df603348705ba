"""The classic hand-written SSE protocol, for clients without the AI SDK.

`data: {"content": "..."}` per text delta, `data: {"error": "..."}` on failure, `data: [DONE]`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from chatcore.events import ErrorEvent, Event, Finish, TextDelta

HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache, no-transform",
    "connection": "keep-alive",
    "x-accel-buffering": "no",
}

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
DONE = b"data: [DONE]\n\n"


async def encode_sse(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    async for event in events:
        if isinstance(event, TextDelta):
            yield b"data: " + _dumps({"content": event.text}).encode() + b"\n\n"
        elif isinstance(event, Finish):
            yield DONE
            return
        elif isinstance(event, ErrorEvent):
            yield b"data: " + _dumps({"error": event.message}).encode() + b"\n\n" + DONE
            return
    yield b"data: " + _dumps({"error": "The response ended unexpectedly."}).encode() + b"\n\n" + DONE
