"""`encode_ui_message_stream` over hand-built event sequences, read back as the AI SDK reads it."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, get_args

import pytest
from chatcore.api.encoders.coalesce import PING
from chatcore.api.encoders.ui_message_stream import compact, encode_ui_message_stream
from chatcore.events import (
    ErrorEvent,
    Event,
    Finish,
    FinishReason,
    ReasoningDelta,
    ResponseInfo,
    Start,
    TextDelta,
    ToolInputReady,
    ToolInputStart,
    Usage,
    UsageReport,
)
from chatcore.providers.decoders.sse import SSEDecoder, SSEEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# finishReason values an ai 7.x client accepts (shared/reference/ai-sdk-protocol.md, section 3).
SDK_FINISH_REASONS = {"stop", "length", "content-filter", "tool-calls", "error", "interrupted", "other"}
START = Start(message_id="msg_1", provider="mock", model="echo")


async def from_list(events: Sequence[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


async def encode(events: Sequence[Event]) -> bytes:
    return b"".join([piece async for piece in encode_ui_message_stream(from_list(events))])


def whatwg_data(body: bytes) -> list[str]:
    """The same body through a spec SSE decoder fed one byte at a time (reads split anywhere)."""
    decoder = SSEDecoder()
    events = [e for i in range(len(body)) for e in decoder.feed(body[i:i + 1])] + decoder.flush()
    assert all(isinstance(e, SSEEvent) and e.event == "message" for e in events)
    return [e.data for e in events if isinstance(e, SSEEvent)]


def chunks_of(body: bytes, sse_data: Callable[[bytes], list[str]]) -> list[dict[str, Any]]:
    """Parse strictly, check both parsers agree and `[DONE]` comes last, return the JSON chunks."""
    data = sse_data(body)
    assert whatwg_data(body) == data
    assert data[-1] == "[DONE]" and "[DONE]" not in data[:-1]
    return [json.loads(item) for item in data[:-1]]


async def test_text_answer_exact_chunks(sse_data: Callable[[bytes], list[str]]) -> None:
    usage = Usage(input_tokens=5, output_tokens=2)
    body = await encode([START, ResponseInfo(model="echo-2025", response_id="r1"), TextDelta("Hello"),
                         TextDelta(", world"), UsageReport(usage), Finish(reason="stop", usage=usage)])
    assert chunks_of(body, sse_data) == [
        {"type": "start", "messageId": "msg_1", "messageMetadata": {"model": "mock/echo", "provider": "mock", "fallbacks": []}},
        {"type": "start-step"},
        {"type": "text-start", "id": "t0"},
        {"type": "text-delta", "id": "t0", "delta": "Hello"},
        {"type": "text-delta", "id": "t0", "delta": ", world"},
        {"type": "text-end", "id": "t0"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop", "messageMetadata": {
            "model": "mock/echo", "provider": "mock", "fallbacks": [], "providerModel": "echo-2025",
            "usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7, "cachedInputTokens": None,
                      "reasoningTokens": None}}},
    ]


async def test_reasoning_then_text_are_separate_closed_parts(sse_data: Callable[[bytes], list[str]]) -> None:
    body = await encode([START, ReasoningDelta("Let me "), ReasoningDelta("think."), TextDelta("Yes."),
                         Finish(reason="stop")])
    chunks = chunks_of(body, sse_data)
    assert [(c["type"], c.get("id")) for c in chunks[2:-2]] == [
        ("reasoning-start", "r0"), ("reasoning-delta", "r0"), ("reasoning-delta", "r0"), ("reasoning-end", "r0"),
        ("text-start", "t1"), ("text-delta", "t1"), ("text-end", "t1"),
    ]


async def test_alternating_parts_get_fresh_ids(sse_data: Callable[[bytes], list[str]]) -> None:
    body = await encode([START, TextDelta("a"), ReasoningDelta("b"), TextDelta("c"), Finish(reason="stop")])
    starts = [c["id"] for c in chunks_of(body, sse_data) if c["type"].endswith("-start") and "id" in c]
    assert starts == ["t0", "r1", "t2"]


async def test_error_after_start_sends_error_chunk_and_keeps_the_part_open(
        sse_data: Callable[[bytes], list[str]]) -> None:
    usage = Usage(input_tokens=3, output_tokens=1)
    body = await encode([START, TextDelta("par"), ErrorEvent(message="Upstream failed.", code="x", usage=usage)])
    chunks = chunks_of(body, sse_data)
    assert [c["type"] for c in chunks] == ["start", "start-step", "text-start", "text-delta", "error", "finish-step",
                                           "finish"]
    assert chunks[4] == {"type": "error", "errorText": "Upstream failed."}
    assert chunks[-1]["finishReason"] == "error"
    assert chunks[-1]["messageMetadata"]["incomplete"] is True
    assert chunks[-1]["messageMetadata"]["usage"]["outputTokens"] == 1


@pytest.mark.parametrize(("reason", "wire"), [
    ("stop", "stop"), ("length", "length"), ("content_filter", "content-filter"), ("tool_calls", "tool-calls"),
    ("error", "error"), ("other", "other"),
])
async def test_finish_reason_mapping(reason: FinishReason, wire: str, sse_data: Callable[[bytes], list[str]]) -> None:
    chunks = chunks_of(await encode([START, TextDelta("x"), Finish(reason=reason)]), sse_data)
    assert chunks[-1]["finishReason"] == wire


def test_every_internal_finish_reason_is_mapped_to_one_the_sdk_accepts() -> None:
    from chatcore.api.encoders.ui_message_stream import _FINISH_REASONS

    assert set(_FINISH_REASONS) == set(get_args(FinishReason))
    assert set(_FINISH_REASONS.values()) <= SDK_FINISH_REASONS


async def test_source_ending_without_finish_is_an_error_not_a_silent_end(
        sse_data: Callable[[bytes], list[str]]) -> None:
    chunks = chunks_of(await encode([START, TextDelta("cut")]), sse_data)
    assert chunks[-1] == {"type": "error", "errorText": "The response ended unexpectedly."}
    assert "finish" not in [c["type"] for c in chunks]


async def test_empty_source_is_an_error(sse_data: Callable[[bytes], list[str]]) -> None:
    assert chunks_of(await encode([]), sse_data) == [{"type": "error", "errorText": "The response ended unexpectedly."}]


async def test_finish_without_text_has_no_text_part(sse_data: Callable[[bytes], list[str]]) -> None:
    chunks = chunks_of(await encode([START, Finish(reason="length")]), sse_data)
    assert [c["type"] for c in chunks] == ["start", "start-step", "finish-step", "finish"]


async def test_finish_metadata_extra_and_fallbacks_are_merged(sse_data: Callable[[bytes], list[str]]) -> None:
    start = Start(message_id="m", provider="openai", model="gpt", fallbacks=("anthropic-claude:provider_overloaded",),
                  deployment="openai-gpt")
    chunks = chunks_of(await encode([start, TextDelta("x"), Finish(reason="stop", metadata={"cost": 0.5})]), sse_data)
    assert chunks[0]["messageMetadata"]["fallbacks"] == [{"deployment": "anthropic-claude",
                                                          "error": "provider_overloaded"}]
    assert chunks[0]["messageMetadata"]["deployment"] == "openai-gpt"
    assert chunks[-1]["messageMetadata"]["cost"] == 0.5
    assert chunks[-1]["messageMetadata"]["model"] == "openai/gpt"


@pytest.mark.parametrize("text", ['quote " backslash \\', "line\nbreak\r\n\n\ndata: [DONE]\n\n", "\u2028\u2029 ü 🎉",
                                  "\x00\x1f", "lone \ud800 surrogate"])
async def test_any_text_survives_framing_as_valid_json(text: str, sse_data: Callable[[bytes], list[str]]) -> None:
    chunks = chunks_of(await encode([START, TextDelta(text), Finish(reason="stop")]), sse_data)
    assert [c["delta"] for c in chunks if c["type"] == "text-delta"] == [text]


_delta = st.one_of(st.builds(TextDelta, st.text(max_size=8)), st.builds(ReasoningDelta, st.text(max_size=8)))


# `sse_data` is a pure function, so sharing it across examples is safe.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deltas=st.lists(_delta, max_size=12), failed=st.booleans())
async def test_any_delta_sequence_obeys_the_client_ordering_rules(
        deltas: list[Event], failed: bool, sse_data: Callable[[bytes], list[str]]) -> None:
    end: Event = ErrorEvent(message="boom", code="x") if failed else Finish(reason="stop")
    chunks = chunks_of(await encode([START, *deltas, end]), sse_data)
    open_ids: set[str] = set()
    seen_ids: set[str] = set()
    texts: dict[str, str] = {"text": "", "reasoning": ""}
    for chunk in chunks:
        kind, _, step = chunk["type"].rpartition("-")
        if kind not in texts:
            continue
        if step == "start":
            assert chunk["id"] not in seen_ids and not open_ids  # fresh id, one part open at a time
            open_ids.add(chunk["id"])
            seen_ids.add(chunk["id"])
        elif step == "delta":
            assert chunk["id"] in open_ids
            texts[kind] += chunk["delta"]
        elif step == "end":
            open_ids.remove(chunk["id"])
    assert texts["text"] == "".join(d.text for d in deltas if isinstance(d, TextDelta))
    assert texts["reasoning"] == "".join(d.text for d in deltas if isinstance(d, ReasoningDelta))
    assert chunks[-1]["type"] == "finish"
    assert chunks[-1]["finishReason"] == ("error" if failed else "stop")
    if not failed:
        assert not open_ids  # a finished answer closes its last part


async def pieces(events: Sequence[Event]) -> list[bytes]:
    return [piece async for piece in encode_ui_message_stream(from_list(events))]


async def test_compact_merges_each_parts_deltas_and_keeps_every_other_chunk(
        sse_data: Callable[[bytes], list[str]]) -> None:
    """What the stream log stores: one delta per run of a part's deltas, pings dropped, the rest as is."""
    chunks = await pieces([START, ReasoningDelta("Let me "), ReasoningDelta("think."), TextDelta("Hel"),
                           TextDelta("lo 🎉"), TextDelta(" lone \ud800"), ToolInputStart(call_id="c1", name="f"),
                           ToolInputReady(call_id="c1", name="f", input={}), TextDelta("a"), TextDelta("b"),
                           Finish(reason="stop")])
    body = b"".join(chunks[:3]) + PING + b"".join(chunks[3:])  # a ping between two deltas of one part
    compacted = chunks_of(compact(body), sse_data)
    full = chunks_of(b"".join(chunks), sse_data)
    assert [(c["type"], c.get("id"), c.get("delta")) for c in compacted if "delta" in c["type"]] == [
        ("reasoning-delta", "r0", "Let me think."), ("text-delta", "t1", "Hello 🎉 lone \ud800"),
        ("text-delta", "t2", "ab")]
    assert [c for c in compacted if "delta" not in c["type"]] == [c for c in full if "delta" not in c["type"]]
    assert b": ping" not in compact(body)


def _rebuilt(chunks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """What a client builds: the non-delta chunks in order, and each part's text by id."""
    others = [c for c in chunks if not c["type"].endswith("-delta")]
    texts: dict[str, str] = {}
    for chunk in chunks:
        if chunk["type"].endswith("-delta"):
            texts[chunk["id"]] = texts.get(chunk["id"], "") + chunk["delta"]
    return others, texts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deltas=st.lists(_delta, max_size=16), cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=4),
       ping_at=st.integers(min_value=0, max_value=40))
async def test_compacted_batches_rebuild_exactly_the_answer(
        deltas: list[Event], cuts: list[int], ping_at: int, sse_data: Callable[[bytes], list[str]]) -> None:
    """Cut into batches anywhere between writes and each batch compacted, a reader rebuilds the same message."""
    chunks = await pieces([START, *deltas, Finish(reason="stop")])
    chunks.insert(min(ping_at, len(chunks) - 1), PING)
    bounds = sorted({min(c, len(chunks)) for c in cuts} | {0, len(chunks)})
    batches = [compact(b"".join(chunks[lo:hi])) for lo, hi in itertools.pairwise(bounds)]
    logged = chunks_of(b"".join(batches), sse_data)
    assert _rebuilt(logged) == _rebuilt(chunks_of(b"".join(c for c in chunks if c != PING), sse_data))
    for batch in batches:  # within a batch, no two deltas of one part follow each other
        parsed = [json.loads(data) for data in (sse_data(batch) if batch else []) if data != "[DONE]"]
        kinds = [(c["type"], c["id"]) for c in parsed if c["type"].endswith("-delta")]
        assert all(a != b for a, b in itertools.pairwise(kinds))
    assert compact(b"".join(batches)) == compact(b"".join(chunks))  # compacting again merges across batches
