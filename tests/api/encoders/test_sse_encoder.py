"""`encode_sse` (the classic `{"content"}` / `{"error"}` / `[DONE]` protocol) over hand-built events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from chatcore.api.encoders.sse import encode_sse
from chatcore.events import (
    ErrorEvent,
    Event,
    Finish,
    ReasoningDelta,
    ResponseInfo,
    Start,
    TextDelta,
    Usage,
    UsageReport,
)
from chatcore.providers.decoders.sse import SSEDecoder, SSEEvent

START = Start(message_id="msg_1", provider="mock", model="echo")


async def from_list(events: Sequence[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


async def decoded(events: Sequence[Event], sse_data: Callable[[bytes], list[str]]) -> list[Any]:
    """Encode, parse strictly and with a spec decoder fed byte by byte; JSON chunks plus the final `[DONE]`."""
    body = b"".join([piece async for piece in encode_sse(from_list(events))])
    data = sse_data(body)
    decoder = SSEDecoder()
    spec = [e.data for i in range(len(body)) for e in decoder.feed(body[i:i + 1]) if isinstance(e, SSEEvent)]
    assert spec == data
    assert data[-1] == "[DONE]" and "[DONE]" not in data[:-1]
    return [json.loads(item) for item in data[:-1]] + ["[DONE]"]


async def test_text_deltas_then_done(sse_data: Callable[[bytes], list[str]]) -> None:
    usage = Usage(input_tokens=1, output_tokens=2)
    events = [START, ResponseInfo(model="m"), TextDelta("Hel"), TextDelta("lo"), UsageReport(usage),
              Finish(reason="stop", usage=usage)]
    assert await decoded(events, sse_data) == [{"content": "Hel"}, {"content": "lo"}, "[DONE]"]


async def test_reasoning_is_not_sent_as_content(sse_data: Callable[[bytes], list[str]]) -> None:
    events = [START, ReasoningDelta("hmm"), TextDelta("Yes"), Finish(reason="stop")]
    assert await decoded(events, sse_data) == [{"content": "Yes"}, "[DONE]"]


async def test_error_after_start(sse_data: Callable[[bytes], list[str]]) -> None:
    events = [START, TextDelta("par"), ErrorEvent(message="Upstream failed.", code="x")]
    assert await decoded(events, sse_data) == [{"content": "par"}, {"error": "Upstream failed."}, "[DONE]"]


async def test_source_ending_without_finish_is_an_error(sse_data: Callable[[bytes], list[str]]) -> None:
    events = [START, TextDelta("cut")]
    assert await decoded(events, sse_data) == [
        {"content": "cut"}, {"error": "The response ended unexpectedly."}, "[DONE]"]


async def test_events_after_finish_are_not_sent(sse_data: Callable[[bytes], list[str]]) -> None:
    events = [START, TextDelta("a"), Finish(reason="length"), TextDelta("late")]
    assert await decoded(events, sse_data) == [{"content": "a"}, "[DONE]"]


async def test_awkward_text_round_trips(sse_data: Callable[[bytes], list[str]]) -> None:
    texts = ["a\n\nb", "data: [DONE]\n\n", "\r\n", "🎉\u2028", "lone \udc00"]
    events: list[Event] = [START, *(TextDelta(t) for t in texts), Finish(reason="stop")]
    assert await decoded(events, sse_data) == [{"content": t} for t in texts] + ["[DONE]"]
