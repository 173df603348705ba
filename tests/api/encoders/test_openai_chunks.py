"""`encode_chat_completion_chunks` and `collect_chat_completion` over hand-built events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from chatcore.api.encoders.openai_chunks import (
    Completion,
    collect_chat_completion,
    encode_chat_completion_chunks,
)
from chatcore.events import ErrorEvent, Event, Finish, ReasoningDelta, Start, TextDelta, Usage, UsageReport

START = Start(message_id="msg_abc", provider="mock", model="echo", deployment="mock-fast",
              fallbacks=("mock-fail-529:provider_overloaded",))
COMPLETION = Completion(created=1_700_000_000, prompt_tokens_estimate=11)


async def from_list(events: Sequence[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


async def chunks(events: Sequence[Event], sse_data: Callable[[bytes], list[str]], *,
                 include_usage: bool = False) -> list[Any]:
    body = b"".join([piece async for piece in encode_chat_completion_chunks(
        from_list(events), COMPLETION, include_usage=include_usage)])
    return [item if item == "[DONE]" else json.loads(item) for item in sse_data(body)]


async def test_role_first_then_content_then_finish_then_done(sse_data: Callable[[bytes], list[str]]) -> None:
    out = await chunks([START, TextDelta("Hel"), TextDelta("lo"), Finish("stop", metadata={"costUsd": 0.5})], sse_data)
    assert out[-1] == "[DONE]"
    first, *deltas, finish = out[:-1]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["id"] for c in out[:-1]} == {"chatcmpl-abc"}
    assert {c["object"] for c in out[:-1]} == {"chat.completion.chunk"}
    assert {c["model"] for c in out[:-1]} == {"mock/echo"} and {c["created"] for c in out[:-1]} == {1_700_000_000}
    assert [d["choices"][0]["delta"]["content"] for d in deltas] == ["Hel", "lo"]
    assert all(d["choices"][0]["finish_reason"] is None for d in [first, *deltas])
    assert finish["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert finish["x_chat"] == {"deployment": "mock-fast", "cost_usd": 0.5}
    assert all("usage" not in c for c in out[:-1])  # only with stream_options.include_usage


@pytest.mark.parametrize(("internal", "openai"), [("stop", "stop"), ("length", "length"),
                                                  ("content_filter", "content_filter"), ("other", "stop")])
async def test_finish_reasons_are_mapped(internal: str, openai: str, sse_data: Callable[[bytes], list[str]]) -> None:
    out = await chunks([START, TextDelta("x"), Finish(internal)], sse_data)  # type: ignore[arg-type]
    assert out[-2]["choices"][0]["finish_reason"] == openai


async def test_usage_chunk_has_the_details_the_provider_reported(sse_data: Callable[[bytes], list[str]]) -> None:
    usage = Usage(input_tokens=20, output_tokens=7, cached_input_tokens=16, reasoning_tokens=3)
    out = await chunks([START, ReasoningDelta("hmm"), TextDelta("x"), Finish("stop", usage=usage)], sse_data,
                       include_usage=True)
    assert out[1]["choices"][0]["delta"] == {"reasoning_content": "hmm"}
    assert all(c["usage"] is None for c in out[:-2])
    last = out[-2]
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27,
                             "prompt_tokens_details": {"cached_tokens": 16},
                             "completion_tokens_details": {"reasoning_tokens": 3}}


async def test_usage_is_estimated_when_the_provider_reported_none(sse_data: Callable[[bytes], list[str]]) -> None:
    out = await chunks([START, TextDelta("x" * 40), Finish("stop")], sse_data, include_usage=True)
    usage = out[-2]["usage"]
    assert usage["prompt_tokens"] == 11 and usage["completion_tokens"] == 11 and usage["total_tokens"] == 22
    assert "prompt_tokens_details" not in usage


async def test_a_later_usage_report_is_used_when_finish_has_none(sse_data: Callable[[bytes], list[str]]) -> None:
    out = await chunks([START, TextDelta("x"), UsageReport(Usage(5, 2)), Finish("stop")], sse_data,
                       include_usage=True)
    assert out[-2]["usage"]["prompt_tokens"] == 5 and out[-2]["usage"]["completion_tokens"] == 2


async def test_failure_after_the_first_token_ends_with_an_error_event_and_no_finish_reason(
        sse_data: Callable[[bytes], list[str]]) -> None:
    out = await chunks([START, TextDelta("partial"), ErrorEvent("It broke.", "provider_stream_error", retryable=True)],
                       sse_data, include_usage=True)
    assert "[DONE]" not in out
    assert out[-1] == {"error": {"message": "It broke.", "type": "server_error", "param": None,
                                 "code": "provider_stream_error"}}
    assert all(c["choices"][0]["finish_reason"] is None for c in out[:-1])


@pytest.mark.parametrize("events", [[START, TextDelta("cut")], [START, TextDelta("x"), Finish("error")]],
                         ids=["no terminal event", "finish reason error"])
async def test_an_unfinished_or_failed_answer_is_never_a_clean_stop(
        events: list[Event], sse_data: Callable[[bytes], list[str]]) -> None:
    out = await chunks(events, sse_data)
    assert "error" in out[-1] and "[DONE]" not in out
    assert not any(c.get("choices") and c["choices"][0]["finish_reason"] for c in out[:-1])


async def test_collect_builds_the_completion_object() -> None:
    usage = Usage(input_tokens=4, output_tokens=2, cached_input_tokens=4)
    result = await collect_chat_completion(
        from_list([START, TextDelta("Hi "), TextDelta("there"), Finish("length", usage=usage,
                                                                       metadata={"cache": "hit", "costUsd": 0.0})]),
        COMPLETION)
    assert isinstance(result, dict)
    assert result["object"] == "chat.completion" and result["id"] == "chatcmpl-abc" and result["model"] == "mock/echo"
    assert result["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hi there", "refusal": None},
                                  "logprobs": None, "finish_reason": "length"}]
    assert result["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6,
                               "prompt_tokens_details": {"cached_tokens": 4}}
    assert result["x_chat"] == {"deployment": "mock-fast", "cost_usd": 0.0, "cache": "hit"}


async def test_collect_returns_the_error_that_ended_the_answer() -> None:
    error = ErrorEvent("It broke.", "provider_stream_error")
    assert await collect_chat_completion(from_list([START, TextDelta("x"), error]), COMPLETION) == error
    ended = await collect_chat_completion(from_list([START, TextDelta("x")]), COMPLETION)
    assert isinstance(ended, ErrorEvent) and ended.code == "provider_stream_truncated"
