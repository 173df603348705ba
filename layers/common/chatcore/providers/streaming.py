"""The contract between an adapter's wire parser and its I/O loop.

A parser turns bytes into events with no I/O, so tests feed it recorded bytes split at every
offset and the benchmark measures it alone. When the provider reports an error, the parser
returns the events before it and sets `error`; the relay yields those, then raises.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from chatcore import errors
from chatcore.events import Finish, ProviderEvent
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
