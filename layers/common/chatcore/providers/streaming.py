"""The contract between an adapter's wire parser and its I/O loop.

A parser turns bytes into events with no I/O, so tests feed it recorded bytes split at every
offset and the benchmark measures it alone. When the provider reports an error, the parser
returns the events before it and sets `error`; the relay yields those, then raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatcore import errors
from chatcore.events import Finish, ProviderEvent, ToolInputDelta, ToolInputReady, ToolInputStart
from chatcore.providers.decoders.sse import SSEDecoder, SSEEvent

# After the end marker only the end of the HTTP message is left; a server that keeps the body
# open longer costs its connection (closed instead of pooled), never the answer.
DRAIN_TIMEOUT_S = 0.5


class StreamParser(Protocol):
    error: errors.ProviderError | None

    def feed(self, chunk: bytes) -> list[ProviderEvent]:
        """Parse more bytes; return the complete events they finish."""
        ...

    def close(self) -> list[ProviderEvent]:
        """End of body: return the last events, or raise (in-stream error, truncation)."""
        ...


async def relay(parser: StreamParser, body: AsyncIterator[bytes]) -> AsyncIterator[ProviderEvent]:
    """Run a parser over a byte stream, raising the first error only after the events before it.

    The body is read to its end before `Finish` is yielded: consumers stop at `Finish`, and a
    response closed half-read cannot go back to the connection pool, so every request would pay
    a new TCP and TLS handshake.
    """
    async for chunk in body:
        events = parser.feed(chunk)
        if events and isinstance(events[-1], Finish):
            await _drain(body)
        for event in events:
            yield event
        if parser.error is not None:
            raise parser.error
    for event in parser.close():
        yield event


async def _drain(body: AsyncIterator[bytes]) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            async for _ in body:
                pass


def parse_all(parser: StreamParser, chunks: list[bytes]) -> tuple[list[ProviderEvent], errors.ProviderError | None]:
    """Synchronous driver for tests and benchmarks: all events, and the error if one ended the stream."""
    events: list[ProviderEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
        if parser.error is not None:
            return events, parser.error
    try:
        events.extend(parser.close())
    except errors.ProviderError as exc:
        return events, exc
    return events, None


def truncated(provider: str, model: str) -> errors.TruncatedStreamError:
    """The error for a body that ended without the provider's end marker: never a silent success."""
    return errors.TruncatedStreamError("The provider closed the stream before it was complete.",
                                       provider=provider, model=model)


def malformed(provider: str, model: str, what: str = "malformed data") -> errors.InStreamError:
    """The error for data a provider sent inside a 200 stream that cannot be read (retryable)."""
    return errors.InStreamError(f"The provider sent {what}.", provider=provider, model=model, http_status=200,
                                retryable=True)


def token_count(value: object) -> int | None:
    """A usage field as a non-negative int: `12` and `"12"` are 12; anything else is unknown (None).

    Providers (and the servers that imitate them) send odd values; a bad count must never end a
    stream, so it becomes "not reported" rather than an exception.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.isdigit() and len(text) <= 18 else None
    return None


def add_counts(*values: int | None) -> int | None:
    """The sum of the known counts, or None when none is known."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def new_call_id() -> str:
    """An id for a tool call whose provider sends none (Gemini, Ollama)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_tool_input(text: str) -> tuple[Any, str | None]:
    """A tool call's JSON input: `(value, None)`, or `(text, why)` when it is not valid JSON.

    An empty input means no arguments (`{}`), as Anthropic and Bedrock send it for a tool
    without parameters.
    """
    if not text.strip():
        return {}, None
    try:
        return json.loads(text), None
    except ValueError as exc:
        return text, f"The tool input is not valid JSON: {exc}"


@dataclass(slots=True)
class _OpenCall:
    id: str
    name: str
    parts: list[str] = field(default_factory=list)
    started: bool = False


class ToolCallStreams:
    """Tool calls whose input arrives as streamed JSON text, keyed by the provider's block index.

    The adapter reports what the wire says (`begin`, `append`, `end`) and gets back the
    `ToolInputStart` / `ToolInputDelta` / `ToolInputReady` events to emit. A call's start waits
    until its name is known; `end_all` completes whatever is still open when the answer finishes.
    """

    __slots__ = ("_open", "count")

    def __init__(self) -> None:
        self._open: dict[object, _OpenCall] = {}
        self.count = 0  # calls completed

    def __contains__(self, key: object) -> bool:
        return key in self._open

    def call_id(self, key: object) -> str | None:
        call = self._open.get(key)
        return call.id if call else None

    def begin(self, key: object, call_id: str | None, name: str | None) -> list[ProviderEvent]:
        out: list[ProviderEvent] = []
        call = self._open.get(key)
        if call is not None and call_id and call.id != call_id:
            out.extend(self.end(key))  # a new call reusing the index (some compatible servers)
            call = None
        if call is None:
            call = self._open[key] = _OpenCall(call_id or new_call_id(), name or "")
        elif name and not call.name:
            call.name = name
        return out + self._start(call)

    def append(self, key: object, text: str) -> list[ProviderEvent]:
        call = self._open.get(key)
        if call is None or not text:
            return []
        call.parts.append(text)
        return [ToolInputDelta(call.id, text)] if call.started else []

    def end(self, key: object, metadata: dict[str, Any] | None = None) -> list[ProviderEvent]:
        call = self._open.pop(key, None)
        if call is None:
            return []
        out = self._start(call, force=True)
        value, error = parse_tool_input("".join(call.parts))
        self.count += 1
        out.append(ToolInputReady(call.id, call.name, value, error=error, metadata=metadata or {}))
        return out

    def end_all(self) -> list[ProviderEvent]:
        out: list[ProviderEvent] = []
        for key in list(self._open):
            out.extend(self.end(key))
        return out

    def whole(self, call_id: str | None, name: str, value: Any,
              metadata: dict[str, Any] | None = None) -> list[ProviderEvent]:
        """A call that arrives complete (Gemini, Ollama): start, its input as one delta, ready."""
        call_id = call_id or new_call_id()
        self.count += 1
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return [ToolInputStart(call_id, name), ToolInputDelta(call_id, text),
                ToolInputReady(call_id, name, value, metadata=metadata or {})]

    @staticmethod
    def _start(call: _OpenCall, *, force: bool = False) -> list[ProviderEvent]:
        if call.started or not (call.name or force):
            return []
        call.started = True
        out: list[ProviderEvent] = [ToolInputStart(call.id, call.name)]
        out.extend(ToolInputDelta(call.id, part) for part in call.parts)  # input that came before the name
        return out


class SSEStreamParser:
    """Shared body of the parsers whose provider frames JSON in SSE events and ends with a marker.

    Subclasses implement `_event(data, out)`: append the events one SSE `data` makes, set `error`
    on an in-stream error, and set `_done` when the provider's end marker arrives.
    """

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.error: errors.ProviderError | None = None
        self._decoder = SSEDecoder()
        self._done = False

    def _event(self, data: str, out: list[ProviderEvent]) -> None:
        raise NotImplementedError

    def feed(self, chunk: bytes) -> list[ProviderEvent]:
        if self.error is not None or self._done:
            return []
        out: list[ProviderEvent] = []
        for item in self._decoder.feed(chunk):
            if isinstance(item, SSEEvent):
                self._event(item.data, out)
                if self.error is not None or self._done:
                    break
        return out

    def close(self) -> list[ProviderEvent]:
        out: list[ProviderEvent] = []
        if self.error is None and not self._done:
            for item in self._decoder.flush():
                if isinstance(item, SSEEvent):
                    self._event(item.data, out)
        if self.error is not None:
            raise self.error
        if not self._done:
            raise truncated(self.provider, self.model)
        return out
