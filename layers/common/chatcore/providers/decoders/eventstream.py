"""The AWS event stream (`application/vnd.amazon.eventstream`), decoded by botocore's own parser.

botocore's `EventStreamBuffer` checks the prelude and message CRCs and splits the binary frames;
this wrapper turns each frame into `(kind, name, payload)` where `kind` is the `:message-type`
header (`event`, `exception` or `error`), `name` the event or exception type, and `payload` the
decoded JSON body. It is fed arbitrary byte chunks, so a frame may span many reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.eventstream import EventStreamBuffer


@dataclass(frozen=True, slots=True)
class EventStreamFrame:
    kind: str
    name: str
    payload: dict[str, Any]


class EventStreamDecoder:
    """Feed bytes, get back complete frames. Raises `botocore.eventstream.ParserError` on corruption."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()

    def feed(self, chunk: bytes) -> list[EventStreamFrame]:
        if not chunk:
            return []
        self._buffer.add_data(chunk)
        frames: list[EventStreamFrame] = []
        for message in self._buffer:
            headers = message.headers
            kind = str(headers.get(":message-type", "event"))
            if kind == "event":
                name = str(headers.get(":event-type", ""))
            elif kind == "exception":
                name = str(headers.get(":exception-type", ""))
            else:
                name = str(headers.get(":error-code", "error"))
            payload = json.loads(message.payload) if message.payload else {}
            if kind == "error" and not payload:
                payload = {"message": str(headers.get(":error-message", ""))}
            frames.append(EventStreamFrame(kind, name, payload if isinstance(payload, dict) else {}))
        return frames
