"""A deterministic provider for local development and tests: a first-class provider, not a stub.

The model name picks the behaviour, and query-style parameters tune it, e.g.
`mock/echo`, `mock/lorem?tokens=200&pace_ms=5`, `mock/fail-429`, `mock/fail-after-5`,
`mock/stall`, `mock/truncate-after-3`. See the README for the full list.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl

from chatcore import errors
from chatcore.events import Finish, ProviderEvent, ReasoningDelta, ResponseInfo, TextDelta, Usage, UsageReport
from chatcore.messages import ModelRequest
from chatcore.providers import http
from chatcore.providers.base import ProbeResult, refuse_json_output

LOREM = ["Lorem", "ipsum", "dolor", "sit", "amet,", "consectetur", "adipiscing", "elit,", "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua.", "Ut", "enim", "ad", "minim", "veniam,", "quis", "nostrud", "exercitation", "ullamco", "laboris", "nisi", "ut", "aliquip", "ex", "ea", "commodo", "consequat.", "Duis", "aute", "irure", "dolor", "in", "reprehenderit", "in", "voluptate", "velit", "esse", "cillum", "dolore", "eu", "fugiat", "nulla", "pariatur.", "Excepteur", "sint", "occaecat", "cupidatat", "non", "proident,", "sunt", "in", "culpa", "qui", "officia", "deserunt", "mollit", "anim", "id", "est", "laborum."]

_TOKEN = re.compile(r"\S+\s*|\s+")
_SCENARIO = re.compile(
    r"^(?P<kind>echo|lorem|reason|fail|fail-after|stall|stall-after|truncate-after)"
    r"(?:-(?P<arg>[a-z0-9]+))?$"
)


def tokenize(text: str) -> list[str]:
    """Word-level tokens that concatenate back to the text exactly."""
    return _TOKEN.findall(text)


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


@dataclass(frozen=True, slots=True)
class MockScenario:
    kind: str
    arg: str | None
    ttft_ms: float
    pace_ms: float
    tokens: int
    text: str | None
    retry_after: float | None

    @classmethod
    def parse(cls, model: str, *, ttft_ms: float, pace_ms: float, tokens: int) -> MockScenario:
        name, _, query = model.partition("?")
        match = _SCENARIO.match(name or "echo")
        if match is None:
            raise errors.ModelNotFoundError(
                f"Unknown mock model '{name}'. Try echo, lorem, reason, fail-<status>, fail-after-<n>, "
                "stall, stall-after-<n> or truncate-after-<n>.", provider="mock", model=model)
        params = dict(parse_qsl(query))
        try:
            return cls(
                kind=match["kind"],
                arg=match["arg"],
                ttft_ms=float(params.get("ttft_ms", ttft_ms)),
                pace_ms=float(params.get("pace_ms", pace_ms)),
                tokens=int(params.get("tokens", tokens)),
                text=params.get("text"),
                retry_after=float(params["retry_after"]) if "retry_after" in params else None,
            )
        except ValueError as exc:
            raise errors.BadRequestError(f"Invalid mock parameter: {exc}", provider="mock", model=model) from exc


class MockProvider:
    """Streams deterministic text at a set pace, or fails in a chosen way."""

    name = "mock"

    def __init__(self, *, ttft_ms: float = 100.0, pace_ms: float = 20.0, tokens: int = 40) -> None:
        self.ttft_ms = ttft_ms
        self.pace_ms = pace_ms
        self.tokens = tokens

    def answer_text(self, request: ModelRequest, scenario: MockScenario) -> str:
        if scenario.text is not None:
            return scenario.text
        if scenario.kind == "echo":
            return f"You said: {request.last_user_text()}"
        words = [LOREM[i % len(LOREM)] for i in range(scenario.tokens)]
        return " ".join(words)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        scenario = MockScenario.parse(request.model, ttft_ms=self.ttft_ms, pace_ms=self.pace_ms,
                                      tokens=self.tokens)
        model = request.model.partition("?")[0]
        refuse_json_output(request, self.name)  # the mock writes prose: it cannot promise JSON
        if scenario.kind == "fail":
            raise self._failure(scenario, model)
        response_id = "mock-" + hashlib.sha1(repr(request.messages).encode()).hexdigest()[:12]
        yield ResponseInfo(model=model, response_id=response_id)
        if scenario.kind == "stall":
            await asyncio.Event().wait()
        if scenario.ttft_ms > 0:
            await asyncio.sleep(scenario.ttft_ms / 1000)
        prompt_tokens = sum(estimate_tokens(m.content) for m in request.messages)
        prompt_tokens += estimate_tokens(request.system or "")
        if scenario.kind == "reason":
            for token in tokenize("Thinking about the question step by step."):
                yield ReasoningDelta(token)
        tokens = tokenize(self.answer_text(request, scenario))
        limit = request.max_output_tokens
        cut_at = int(scenario.arg) if scenario.kind.endswith("-after") and scenario.arg else None
        emitted = 0
        for index, token in enumerate(tokens):
            if cut_at is not None and index == cut_at:
                yield UsageReport(Usage(prompt_tokens, emitted))
                if scenario.kind == "fail-after":
                    raise errors.InStreamError("The mock provider failed mid-stream.", provider="mock",
                                               model=model, http_status=200, retryable=True)
                if scenario.kind == "truncate-after":
                    raise errors.TruncatedStreamError(
                        "The provider closed the stream before it was complete.", provider="mock", model=model)
                await asyncio.Event().wait()  # stall-after
            if limit is not None and emitted >= limit:
                yield Finish(reason="length", raw_reason="length", usage=Usage(prompt_tokens, emitted))
                return
            if index and scenario.pace_ms > 0:
                await asyncio.sleep(scenario.pace_ms / 1000)
            emitted += 1
            yield TextDelta(token)
        usage = Usage(prompt_tokens, emitted)
        yield UsageReport(usage)
        yield Finish(reason="stop", raw_reason="stop", usage=usage)

    def _failure(self, scenario: MockScenario, model: str) -> errors.ProviderError:
        arg = scenario.arg or "500"
        if arg == "context":
            return errors.ContextTooLongError("The prompt is too long for this model.", provider="mock",
                                              model=model, http_status=400)
        if arg == "quota":
            return errors.QuotaExhaustedError("The provider quota is exhausted.", provider="mock",
                                              model=model, http_status=429)
        if arg == "timeout":
            return errors.ProviderTimeoutError("The provider timed out.", provider="mock", model=model)
        status = int(arg) if arg.isdigit() else 500
        cls = http.classify_status(status)
        retry_after = scenario.retry_after
        if retry_after is None and status == 429:
            retry_after = 1.0
        return cls(f"The mock provider failed with HTTP {status}.", provider="mock", model=model,
                   http_status=status, retry_after=retry_after)

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        started = time.perf_counter()
        await asyncio.sleep(0)
        return ProbeResult("up", (time.perf_counter() - started) * 1000)
