"""Shared helpers for the provider tests: the recorded wire fixtures, and the llmock emulator.

The fixtures live in `<repo>/../shared/fixtures/providers` (CI clones `shared/` beside the repo).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatcore import errors
from chatcore.events import Finish, ProviderEvent, ReasoningDelta, ResponseInfo, TextDelta, UsageReport
from chatcore.providers.anthropic import AnthropicStreamParser
from chatcore.providers.bedrock import BedrockStreamParser
from chatcore.providers.gemini import GeminiStreamParser
from chatcore.providers.ollama import OllamaStreamParser
from chatcore.providers.openai import OpenAIStreamParser
from chatcore.providers.streaming import StreamParser

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "providers"
EXPECTED: dict[str, dict[str, Any]] = json.loads((FIXTURES / "expected.json").read_text())["fixtures"]

STREAM_FIXTURES = sorted(name for name, exp in EXPECTED.items() if exp["kind"] == "stream")
HTTP_ERROR_FIXTURES = sorted(name for name, exp in EXPECTED.items() if exp["kind"] == "http_error")

# Folder of a fixture -> the adapter whose parser reads it.
ADAPTER_OF = {"openai": "openai", "openai_compat": "openai", "anthropic": "anthropic", "gemini": "gemini",
              "ollama": "ollama", "bedrock": "bedrock"}

PARSERS: dict[str, Callable[[], StreamParser]] = {
    "openai": lambda: OpenAIStreamParser("openai", "m"),
    "anthropic": lambda: AnthropicStreamParser("anthropic", "m"),
    "gemini": lambda: GeminiStreamParser("gemini", "m"),
    "ollama": lambda: OllamaStreamParser("ollama", "m"),
    "bedrock": lambda: BedrockStreamParser("bedrock", "m"),
}


def adapter_of(name: str) -> str:
    return ADAPTER_OF[name.split("/", 1)[0]]


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@dataclass(frozen=True)
class Outcome:
    """What a stream amounted to, in the terms of expected.json."""

    text: str
    reasoning: str
    usage: tuple[int | None, int | None, int | None, int | None] | None  # input, output, total, reasoning
    finish: tuple[str, str | None] | None  # normalized, raw
    error: tuple[type, int | None, bool, float | None, str, str] | None  # class, status, retryable, delay, code, msg
    response_ids: tuple[str | None, ...]


def summarize(events: list[ProviderEvent], error: errors.ProviderError | None) -> Outcome:
    """Fold an event list (and the error that ended it) into an `Outcome`."""
    usage = None
    finish = None
    for event in events:
        if isinstance(event, UsageReport):
            usage = event.usage
        elif isinstance(event, Finish):
            assert finish is None, "two Finish events"
            finish = (event.reason, event.raw_reason)
            if event.usage is not None:
                usage = event.usage
    if finish is not None:
        assert isinstance(events[-1], Finish), "events after Finish"
    return Outcome(
        text="".join(e.text for e in events if isinstance(e, TextDelta)),
        reasoning="".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        usage=None if usage is None else (usage.input_tokens, usage.output_tokens, usage.total_tokens,
                                          usage.reasoning_tokens),
        finish=finish,
        error=None if error is None else (type(error), error.http_status, error.retryable, error.retry_after,
                                          error.provider_code or "", error.message),
        response_ids=tuple(e.response_id for e in events if isinstance(e, ResponseInfo)),
    )


def check_against_expected(name: str, outcome: Outcome) -> None:
    """Strict comparison of one stream's outcome with its entry in expected.json."""
    exp = EXPECTED[name]
    assert outcome.text == exp["text"], name
    if "thinking" in exp:
        assert outcome.reasoning == exp["thinking"]
    else:
        assert outcome.reasoning == ""
    exp_usage = exp["usage"]
    if exp["outcome"] == "error":
        assert outcome.finish is None, "an errored stream must not also finish"
        assert outcome.error is not None, "an error after HTTP 200 must never look like success"
        cls, status, retryable, _delay, code, message = outcome.error
        assert cls is errors.InStreamError
        assert status == 200
        assert retryable is exp["error"]["retryable"]
        assert exp["error"]["type"] in code.split(":"), code
        assert message == exp["error"]["message"]
        assert bool(outcome.text) is exp["error"]["partial_output"]
        if exp_usage is not None:  # only Anthropic reports usage before its error
            assert outcome.usage is not None
            assert outcome.usage[:2] == (exp_usage["input_tokens"], exp_usage["output_tokens"])
        return
    assert outcome.error is None, outcome.error
    assert outcome.finish is not None
    reason, raw = outcome.finish
    assert reason == exp["normalized_finish"]
    assert raw == (exp["finish_reason"] or exp.get("block_reason"))
    if exp["outcome"] == "blocked":
        assert reason == "content_filter"
    if exp_usage is None:
        assert outcome.usage is None, "no usage on the wire must stay unknown, not 0"
    else:
        # Gemini bills thoughts as output: our output counts them and reasoning says how many.
        thoughts = exp_usage.get("thoughts_tokens")
        assert outcome.usage == (exp_usage["input_tokens"], exp_usage["output_tokens"] + (thoughts or 0),
                                 exp_usage["total_tokens"], thoughts if thoughts is not None else outcome.usage[3])


# ---------------------------------------------------------------------------------------- llmock

from tests.llmock_upstream import LLMock, llmock, llmock_server  # noqa: E402  (one launcher for all tests)

__all__ = ["LLMock", "llmock", "llmock_server"]
