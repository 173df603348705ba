"""Tool calls as every adapter streams them: the shared OpenAI and Anthropic fixtures and the Gemini,
Bedrock and Ollama fixtures of `tests/providers/fixtures/` (written by `fixtures/build.py` from the
documented formats), each split at every byte, fed byte by byte, cut anywhere, and run through the
adapter's real `stream()`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chatcore import errors
from chatcore.events import (
    Finish,
    ProviderEvent,
    ToolInputDelta,
    ToolInputReady,
    ToolInputStart,
)
from chatcore.messages import Message, ModelRequest
from chatcore.providers.bedrock import BedrockEventMapper, BedrockProvider
from chatcore.providers.streaming import parse_all

from .bedrock_stub import bedrock_client_replaying
from .conftest import FIXTURES, PARSERS, Outcome, summarize
from .fixtures.build import build as build_local_fixtures
from .test_fixture_streams import _provider_with_body

LOCAL = Path(__file__).resolve().parent / "fixtures"

WEATHER_PARIS = {"city": "Paris", "unit": "celsius"}


@dataclass(frozen=True)
class Expected:
    adapter: str
    text: str
    finish: tuple[str, str]
    usage: tuple[int, int]
    calls: list[tuple[str | None, str, Any]]  # id (None: made up by the adapter), name, input
    reasoning: str = ""


CASES: dict[str, Expected] = {
    "openai/chat_stream_tool_call.sse": Expected(
        "openai", "", ("tool_calls", "tool_calls"), (81, 17),
        [("call_Vq3mX9bL2kT7pR1sN8yW4dE6", "get_weather", WEATHER_PARIS)]),
    "anthropic/messages_stream_thinking_tool.sse": Expected(
        "anthropic", "Let me check the weather in Paris — 巴黎.", ("tool_calls", "tool_use"), (412, 96),
        [("toolu_01A09q90qw90lq917835lq9", "get_weather", WEATHER_PARIS)],
        reasoning="The user wants the weather in Paris; I should call get_weather."),
    "gemini/stream_function_call.sse": Expected(
        "gemini", "Checking both cities — 巴黎 and 北京.", ("tool_calls", "STOP"), (52, 38 + 12),
        [(None, "get_weather", WEATHER_PARIS), (None, "get_weather", {"city": "北京", "unit": "celsius"})]),
    "bedrock/converse_stream_tool_use.eventstream": Expected(
        "bedrock", "Let me check the weather in Paris — 巴黎.", ("tool_calls", "tool_use"), (402, 61),
        [("tooluse_Kq3zN8bXTnG6r1Wm4YvE2A", "get_weather", WEATHER_PARIS),
         ("tooluse_Vb7pR2sL9xQw5Tn1Hc8JdM", "get_time", {})]),
    "ollama/chat_stream_tool_call.ndjson": Expected(
        "ollama", "", ("tool_calls", "stop"), (173, 41),
        [(None, "get_weather", WEATHER_PARIS), (None, "get_weather", {"city": "北京 <capital>", "unit": "celsius"})]),
}
SHARED = ("openai/", "anthropic/")


def _path(name: str) -> Path:
    return (FIXTURES if name.startswith(SHARED) else LOCAL) / name


def _bytes(name: str) -> bytes:
    return _path(name).read_bytes()


def _meta(name: str) -> dict[str, Any]:
    stem = name.rsplit(".", 1)[0]
    return json.loads(_path(name).with_name(Path(stem).name + ".meta.json").read_text())


@dataclass(frozen=True)
class ToolTrace:
    id: str
    name: str
    streamed: str  # the deltas, concatenated
    input: Any
    error: str | None
    metadata: dict[str, Any]


def tool_traces(events: list[ProviderEvent]) -> list[ToolTrace]:
    """The tool calls of a stream, checking the event grammar on the way: a call starts once, its
    deltas come between its start and its ready, and every started call is ready before `Finish`."""
    started: dict[str, tuple[str, list[str]]] = {}
    ready: dict[str, ToolInputReady] = {}
    order: list[str] = []
    for event in events:
        if isinstance(event, ToolInputStart):
            assert event.call_id not in started, f"{event.call_id} started twice"
            assert event.name
            started[event.call_id] = (event.name, [])
            order.append(event.call_id)
        elif isinstance(event, ToolInputDelta):
            assert event.call_id in started and event.call_id not in ready, "a delta outside its call"
            started[event.call_id][1].append(event.delta)
        elif isinstance(event, ToolInputReady):
            assert event.call_id in started and event.call_id not in ready, "ready without start, or twice"
            assert event.name == started[event.call_id][0]
            ready[event.call_id] = event
        elif isinstance(event, Finish):
            assert set(ready) == set(started), "a tool call still open at Finish"
    return [ToolTrace(cid, started[cid][0], "".join(started[cid][1]), ready[cid].input, ready[cid].error,
                      ready[cid].metadata) for cid in order if cid in ready]


@dataclass(frozen=True)
class ToolOutcome:
    stream: Outcome
    calls: tuple[tuple[str, str, str, str, str | None], ...]  # id (or its position if made up), name, ...
    kinds: tuple[str, ...]  # the event types in order


def outcome(name: str, events: list[ProviderEvent], error: errors.ProviderError | None) -> ToolOutcome:
    calls = []
    for position, trace in enumerate(tool_traces(events)):
        made_up = CASES[name].calls[position][0] is None if position < len(CASES[name].calls) else False
        calls.append((f"#{position}" if made_up else trace.id, trace.name, trace.streamed,
                      json.dumps(trace.input, sort_keys=True), trace.error))
    base = summarize(events, error)
    return ToolOutcome(base, tuple(calls), tuple(type(e).__name__ for e in events))


def _parse(name: str, chunks: list[bytes]) -> ToolOutcome:
    events, error = parse_all(PARSERS[CASES[name].adapter](), chunks)
    return outcome(name, events, error)


def _events(name: str, chunks: list[bytes]) -> list[ProviderEvent]:
    events, error = parse_all(PARSERS[CASES[name].adapter](), chunks)
    assert error is None, error
    return events


def test_the_local_fixtures_are_what_the_builder_writes() -> None:
    for name, data in build_local_fixtures().items():
        assert (LOCAL / name).read_bytes() == data, f"{name} differs from fixtures/build.py's output"


@pytest.mark.parametrize("name", CASES)
def test_tool_calls_whole_body(name: str) -> None:
    expected = CASES[name]
    events = _events(name, [_bytes(name)])
    base = summarize(events, None)
    assert base.text == expected.text
    assert base.reasoning == expected.reasoning
    assert base.finish == expected.finish
    assert base.usage is not None and base.usage[:2] == expected.usage
    traces = tool_traces(events)
    assert [(t.name, t.input, t.error) for t in traces] == [(n, i, None) for _, n, i in expected.calls]
    for trace, (call_id, _, value) in zip(traces, expected.calls, strict=True):
        if call_id is not None:
            assert trace.id == call_id
        else:
            assert trace.id.startswith("call_") and len(trace.id) > 10
        # The deltas concatenate to the input's JSON text.
        assert json.loads(trace.streamed or "{}") == value
    assert len({t.id for t in traces}) == len(traces), "call ids are unique"
    # Every call is ready before the stream finishes, and nothing comes after Finish.
    assert isinstance(events[-1], Finish)


@pytest.mark.parametrize("name", CASES)
def test_tool_calls_split_in_two_at_every_offset(name: str) -> None:
    data = _bytes(name)
    reference = _parse(name, [data])
    assert reference.calls and reference.stream.error is None
    for offset in range(len(data) + 1):
        assert _parse(name, [data[:offset], data[offset:]]) == reference, f"{name} split at byte {offset}"


@pytest.mark.parametrize("name", CASES)
def test_tool_calls_one_byte_at_a_time(name: str) -> None:
    data = _bytes(name)
    assert _parse(name, [data[i:i + 1] for i in range(len(data))]) == _parse(name, [data])


@pytest.mark.parametrize("name", CASES)
def test_tool_call_stream_cut_anywhere_never_finishes(name: str) -> None:
    data = _bytes(name)
    content_end = len(data.rstrip())
    for cut in range(content_end):
        result = _parse(name, [data[:cut]])
        assert result.stream.finish is None, f"{name} cut at {cut} finished"
        assert result.stream.error is not None and result.stream.error[0] is errors.TruncatedStreamError


def test_gemini_keeps_the_thought_signature_of_a_function_call() -> None:
    traces = tool_traces(_events("gemini/stream_function_call.sse", [_bytes("gemini/stream_function_call.sse")]))
    assert traces[0].metadata == {"gemini": {"thoughtSignature": "CpoCAdHtim9kW2x1ZmXx7Qf3Z0Vb8sYr4lQe"}}
    assert traces[1].metadata == {}


REQUEST = ModelRequest(model="test-model", messages=(Message("user", "Weather in Paris?"),), max_output_tokens=512)


@pytest.mark.parametrize("name", CASES)
async def test_tool_calls_through_the_adapter(name: str) -> None:
    """The adapter's real `stream()` (httpx transport, or boto3 with botocore's parser) agrees with the parser."""
    adapter = CASES[name].adapter
    meta = _meta(name)
    body = _bytes(name)
    events: list[ProviderEvent] = []
    if adapter == "bedrock":
        provider: Any = BedrockProvider(region="us-east-1",
                                        runtime_client=bedrock_client_replaying(meta["status"], meta["headers"], body))
        async for event in provider.stream(REQUEST):
            events.append(event)
        # botocore's own parser ran: same tool calls, text and finish as the raw-bytes parser.
        assert outcome(name, events, None).calls == _parse(name, [body]).calls
        assert summarize(events, None).finish == CASES[name].finish
        return
    provider, client = _provider_with_body(adapter, meta["status"], meta["headers"], body)
    async with client:
        async for event in provider.stream(REQUEST):
            events.append(event)
    assert outcome(name, events, None) == _parse(name, [body])


# ------------------------------------------------------------------------ wire cases, inline


def _sse(*payloads: object) -> bytes:
    return b"".join(b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + b"\n\n" for p in payloads)


def _openai_chunk(tool_calls: list[dict[str, Any]] | None = None, finish: str | None = None,
                  **delta: Any) -> dict[str, Any]:
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {"id": "chatcmpl-1", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _openai(*payloads: object) -> list[ProviderEvent]:
    events, error = parse_all(PARSERS["openai"](), [_sse(*payloads, b"[DONE]")])
    assert error is None, error
    return events


def test_openai_parallel_calls_are_kept_apart_by_index() -> None:
    events = _openai(
        _openai_chunk([{"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}},
                       {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": ""}}]),
        _openai_chunk([{"index": 1, "function": {"arguments": "{\"y\":"}}]),
        _openai_chunk([{"index": 0, "function": {"arguments": "{\"x\":1}"}}]),
        _openai_chunk([{"index": 1, "function": {"arguments": "2}"}}]),
        _openai_chunk(finish="tool_calls"),
    )
    assert [(t.id, t.name, t.input) for t in tool_traces(events)] == [("call_a", "f", {"x": 1}),
                                                                      ("call_b", "g", {"y": 2})]
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"


def test_openai_compatible_server_that_reuses_index_zero_and_says_stop() -> None:
    """Some compatible servers send every call at index 0 with its own id, whole, and finish with "stop"."""
    events = _openai(
        _openai_chunk([{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\":1}"}}]),
        _openai_chunk([{"index": 0, "id": "call_2", "function": {"name": "f", "arguments": "{\"a\":2}"}}]),
        _openai_chunk(finish="stop"),
    )
    assert [(t.id, t.input) for t in tool_traces(events)] == [("call_1", {"a": 1}), ("call_2", {"a": 2})]
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "tool_calls" and finish.raw_reason == "stop"


def test_openai_call_without_id_gets_one_and_waits_for_its_name() -> None:
    events = _openai(
        _openai_chunk([{"index": 0, "function": {"arguments": "{\"q\":"}}]),
        _openai_chunk([{"index": 0, "function": {"name": "search", "arguments": "\"x\"}"}}]),
        _openai_chunk(finish="tool_calls"),
    )
    (trace,) = tool_traces(events)
    assert trace.name == "search" and trace.input == {"q": "x"} and trace.streamed == "{\"q\":\"x\"}"
    assert trace.id.startswith("call_")


def test_invalid_tool_input_is_reported_with_its_raw_text() -> None:
    events = _openai(
        _openai_chunk([{"index": 0, "id": "call_x", "function": {"name": "f", "arguments": "{\"city\": \"Par"}}]),
        _openai_chunk(finish="tool_calls"),
    )
    ready = [e for e in events if isinstance(e, ToolInputReady)]
    assert len(ready) == 1
    assert ready[0].input == "{\"city\": \"Par" and ready[0].error and "not valid JSON" in ready[0].error
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"


def test_anthropic_tool_without_input_is_an_empty_object() -> None:
    body = b"".join(b"event: x\ndata: " + json.dumps(p).encode() + b"\n\n" for p in [
        {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 5}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ])
    events, error = parse_all(PARSERS["anthropic"](), [body])
    assert error is None
    assert [(t.id, t.name, t.input, t.streamed) for t in tool_traces(events)] == [("toolu_1", "now", {}, "")]
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"


def test_bedrock_mapper_handles_boto3_dicts_the_same_way() -> None:
    mapper = BedrockEventMapper("bedrock", "m")
    events: list[ProviderEvent] = []
    for event in [
        {"contentBlockStart": {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{\"a\":"}}}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"toolUse": {"input": "[1]}"}}}},
        {"messageStop": {"stopReason": "tool_use"}},  # no contentBlockStop: the call still completes
        {"metadata": {"usage": {"inputTokens": 3, "outputTokens": 4}}},
    ]:
        events.extend(mapper.handle_dict(event))
    assert [(t.id, t.input) for t in tool_traces(events)] == [("t1", {"a": [1]})]
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"
