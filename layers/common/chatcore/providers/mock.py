"""A deterministic provider for local development and tests: a first-class provider, not a stub.

The model name picks the behaviour, and query-style parameters tune it, e.g.
`mock/echo`, `mock/lorem?tokens=200&pace_ms=5`, `mock/fail-429`, `mock/fail-after-5`,
`mock/stall`, `mock/truncate-after-3`, `mock/tool-call?name=get_weather&input=%7B%22city%22%3A%22Paris%22%7D`,
`mock/summarize` (summaries and long-term memory extraction: `Remember: ...` / `Forget: ...`),
`mock/image` (a short text and a generated PNG; `?size=<bytes>` pads it, `?count=<n>` makes n of them).
See the README for the full list. Parameters are bounded (a caller must not be able to make
the mock build gigabytes of text or sleep for hours), and a malformed one is a 400.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from chatcore import errors
from chatcore.events import (
    FileOutput,
    Finish,
    ProviderEvent,
    ReasoningDelta,
    ResponseInfo,
    TextDelta,
    ToolInputDelta,
    ToolInputReady,
    ToolInputStart,
    Usage,
    UsageReport,
)
from chatcore.messages import Message, ModelRequest
from chatcore.providers import http
from chatcore.providers.base import ProbeResult, refuse_json_output
from chatcore.providers.streaming import truncated
from chatcore.settings import Settings

MAX_TOKENS = 100_000  # lorem length, whatever `tokens` or MOCK_TOKENS say
MAX_TTFT_MS = 10_000.0
MAX_PACE_MS = 1_000.0
MAX_RETRY_AFTER_S = 3_600.0
MAX_IMAGE_BYTES = 5_000_000  # mock/image?size=...
MAX_IMAGES = 4  # mock/image?count=...
_FAIL_NAMES = ("context", "quota", "timeout")

LOREM = ["Lorem", "ipsum", "dolor", "sit", "amet,", "consectetur", "adipiscing", "elit,", "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua.", "Ut", "enim", "ad", "minim", "veniam,", "quis", "nostrud", "exercitation", "ullamco", "laboris", "nisi", "ut", "aliquip", "ex", "ea", "commodo", "consequat.", "Duis", "aute", "irure", "dolor", "in", "reprehenderit", "in", "voluptate", "velit", "esse", "cillum", "dolore", "eu", "fugiat", "nulla", "pariatur.", "Excepteur", "sint", "occaecat", "cupidatat", "non", "proident,", "sunt", "in", "culpa", "qui", "officia", "deserunt", "mollit", "anim", "id", "est", "laborum."]

_TOKEN = re.compile(r"\S+\s*|\s+")
_SCENARIO = re.compile(
    r"^(?P<kind>echo|lorem|reason|fail|fail-after|stall|stall-after|truncate-after|tool-call|summarize|image)"
    r"(?:-(?P<arg>[a-z0-9]+))?$"
)


def tokenize(text: str) -> list[str]:
    """Word-level tokens that concatenate back to the text exactly."""
    return _TOKEN.findall(text)


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def _number(params: dict[str, str], key: str, default: float, cap: float) -> float:
    """A numeric parameter, clamped to `[0, cap]`; anything that is not a finite number is a 400."""
    raw = params.get(key)
    if raw is None:
        value = float(default)
    else:
        try:
            value = float(raw)
        except ValueError:
            raise errors.RequestError(f"Mock parameter {key} must be a number; got {raw!r}.") from None
    if not math.isfinite(value):
        raise errors.RequestError(f"Mock parameter {key} must be a finite number; got {raw!r}.")
    return min(max(value, 0.0), cap)


@dataclass(frozen=True, slots=True)
class MockScenario:
    kind: str
    arg: str | None
    ttft_ms: float
    pace_ms: float
    tokens: int
    text: str | None
    retry_after: float | None
    tool_name: str | None = None
    tool_input: Any = None
    image_size: int = 0  # mock/image: pad the PNG to about this many bytes
    image_count: int = 1

    @classmethod
    def parse(cls, model: str, *, ttft_ms: float, pace_ms: float, tokens: int) -> MockScenario:
        """The behaviour a mock model name asks for; a malformed name or parameter is a `RequestError` (400)."""
        name, _, query = model.partition("?")
        match = _SCENARIO.match(name or "echo")
        if match is None:
            raise errors.ModelNotFoundError(
                f"Unknown mock model '{name}'. Try echo, lorem, reason, fail-<status>, fail-after-<n>, "
                "stall, stall-after-<n>, truncate-after-<n>, image or tool-call?name=<tool>&input=<json>.",
                provider="mock", model=model)
        kind, arg = match["kind"], match["arg"]
        if kind.endswith("-after") and not (arg and arg.isdigit()):
            raise errors.RequestError(f"Mock model '{name}' needs a number of tokens, e.g. '{kind}-3'.")
        if kind == "fail" and arg is not None and not arg.isdigit() and arg not in _FAIL_NAMES:
            raise errors.RequestError(
                f"Mock model '{name}': use fail-<status> or fail-{'/'.join(_FAIL_NAMES)}.")
        params = dict(parse_qsl(query))
        tool_name, tool_input = cls._tool(kind, params)
        return cls(
            kind=kind,
            arg=arg,
            ttft_ms=_number(params, "ttft_ms", ttft_ms, MAX_TTFT_MS),
            pace_ms=_number(params, "pace_ms", pace_ms, MAX_PACE_MS),
            tokens=int(_number(params, "tokens", tokens, MAX_TOKENS)),
            text=params.get("text"),
            retry_after=_number(params, "retry_after", 0, MAX_RETRY_AFTER_S) if "retry_after" in params else None,
            tool_name=tool_name,
            tool_input=tool_input,
            image_size=int(_number(params, "size", 0, MAX_IMAGE_BYTES)),
            image_count=max(1, int(_number(params, "count", 1, MAX_IMAGES))),
        )

    @staticmethod
    def _tool(kind: str, params: dict[str, str]) -> tuple[str | None, Any]:
        if kind != "tool-call":
            return None, None
        name = params.get("name", "").strip()
        if not name:
            raise errors.RequestError("mock/tool-call needs the tool's name: mock/tool-call?name=<tool>&input=<json>.")
        raw = params.get("input", "{}")
        try:
            return name, json.loads(raw)
        except ValueError:
            raise errors.RequestError(f"mock/tool-call: input must be URL-encoded JSON; got {raw!r}.") from None


def _prompt_tokens(request: ModelRequest) -> int:
    total = estimate_tokens(request.system or "")
    for message in request.messages:
        total += estimate_tokens(message.content)
        total += sum(estimate_tokens(json.dumps(c.input)) for c in message.tool_calls)
        total += sum(estimate_tokens(json.dumps(r.output)) for r in message.tool_results)
    return total


def _split(text: str, pieces: int = 3) -> list[str]:
    """`text` in up to `pieces` consecutive fragments (how a real model streams a tool's input)."""
    size = max(1, -(-len(text) // pieces))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


class MockProvider:
    """Streams deterministic text at a set pace, calls a tool, or fails in a chosen way."""

    name = "mock"

    def __init__(self, *, ttft_ms: float = 100.0, pace_ms: float = 20.0, tokens: int = 40) -> None:
        self.ttft_ms = ttft_ms
        self.pace_ms = pace_ms
        self.tokens = tokens

    def answer_text(self, request: ModelRequest, scenario: MockScenario, limit: int | None = None) -> str:
        """The answer's text; lorem is built with at most `limit` words (never more than asked)."""
        if scenario.text is not None:
            return scenario.text
        if scenario.kind == "echo":
            return f"You said: {request.last_user_text()}"
        if scenario.kind == "tool-call":
            return _tool_answer(request.messages[-1], scenario)
        if scenario.kind == "summarize":
            return summarize_answer(request.last_user_text())
        if scenario.kind == "image":
            return "Here is the image you asked for."
        count = scenario.tokens if limit is None else min(scenario.tokens, limit)
        return " ".join(LOREM[i % len(LOREM)] for i in range(count))

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        scenario = MockScenario.parse(request.model, ttft_ms=self.ttft_ms, pace_ms=self.pace_ms,
                                      tokens=self.tokens)
        model = request.model.partition("?")[0]
        if scenario.kind != "summarize":  # mock/summarize answers extraction requests in JSON
            refuse_json_output(request, self.name)  # the others write prose: they cannot promise JSON
        if scenario.kind == "fail":
            raise self._failure(scenario, model)
        response_id = "mock-" + hashlib.sha1(repr(request.messages).encode()).hexdigest()[:12]
        yield ResponseInfo(model=model, response_id=response_id)
        if scenario.kind == "stall":
            await asyncio.Event().wait()
        if scenario.ttft_ms > 0:
            await asyncio.sleep(scenario.ttft_ms / 1000)
        prompt_tokens = _prompt_tokens(request)
        if scenario.kind == "tool-call" and (not request.messages or request.messages[-1].role != "tool"):
            for event in self._tool_call(scenario, response_id, prompt_tokens):
                yield event
            return
        if scenario.kind == "reason":
            for token in tokenize("Thinking about the question step by step."):
                yield ReasoningDelta(token)
        limit = request.max_output_tokens
        # Bounded before any text is built: lorem gets at most `limit + 1` words (one more than the
        # cap, so the answer still ends with `length`), never the billions a caller may ask for.
        tokens = tokenize(self.answer_text(request, scenario, None if limit is None else limit + 1))
        cut_at = int(scenario.arg) if scenario.kind.endswith("-after") and scenario.arg else None
        emitted = 0
        for index, token in enumerate(tokens):
            if cut_at is not None and index == cut_at:
                yield UsageReport(Usage(prompt_tokens, emitted))
                if scenario.kind == "fail-after":
                    raise errors.InStreamError("The mock provider failed mid-stream.", provider="mock",
                                               model=model, http_status=200, retryable=True)
                if scenario.kind == "truncate-after":
                    raise truncated("mock", model)
                await asyncio.Event().wait()  # stall-after
            if limit is not None and emitted >= limit:
                yield Finish(reason="length", raw_reason="length", usage=Usage(prompt_tokens, emitted))
                return
            if index and scenario.pace_ms > 0:
                await asyncio.sleep(scenario.pace_ms / 1000)
            emitted += 1
            yield TextDelta(token)
        if scenario.kind == "image":
            for number in range(scenario.image_count):
                yield FileOutput("image/png", mock_png(number, scenario.image_size))
        usage = Usage(prompt_tokens, emitted)
        yield UsageReport(usage)
        yield Finish(reason="stop", raw_reason="stop", usage=usage)

    @staticmethod
    def _tool_call(scenario: MockScenario, response_id: str, prompt_tokens: int) -> list[ProviderEvent]:
        """One call of the named tool: start, the input JSON in a few pieces, ready, finish."""
        name = scenario.tool_name or ""
        call_id = "call_" + response_id.removeprefix("mock-")
        text = json.dumps(scenario.tool_input, separators=(",", ":"))
        events: list[ProviderEvent] = [ToolInputStart(call_id, name)]
        events.extend(ToolInputDelta(call_id, piece) for piece in _split(text))
        usage = Usage(prompt_tokens, estimate_tokens(text))
        events += [ToolInputReady(call_id, name, scenario.tool_input), UsageReport(usage),
                   Finish(reason="tool_calls", raw_reason="tool_calls", usage=usage)]
        return events

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


def mock_png(number: int = 0, size: int = 0) -> bytes:
    """mock/image's generated file: a real 4x4 PNG (its colour set by `number`), padded with a `tEXt`
    comment to about `size` bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixel = bytes(((number * 80) % 256, 120, 200))
    raw = b"".join(b"\x00" + pixel * 4 for _ in range(4))
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
    tail = chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    padding = max(size - len(head) - len(tail) - 12 - len(b"Comment\x00"), 0)
    if padding:
        head += chunk(b"tEXt", b"Comment\x00" + b"x" * padding)
    return head + tail


_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def _directives(texts: list[str], prefix: str) -> list[str]:
    """The text after `prefix` of every sentence that starts with it (case-insensitive), trailing '.' off."""
    found = []
    for text in texts:
        for sentence in _SENTENCE.split(text):
            sentence = sentence.strip()
            if sentence.lower().startswith(prefix.lower()):
                value = sentence[len(prefix):].strip().rstrip(".").strip()
                if value:
                    found.append(value)
    return found


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def summarize_answer(prompt: str) -> str:
    """mock/summarize: memory actions for an extraction request (JSON with `"task": "extract_memories"`):
    every user sentence starting with `Remember:` is added (unless already remembered), `Forget: <text>`
    deletes the memory with that text; any other request gets a summary made of the user's lines."""
    try:
        data = json.loads(prompt)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("task") == "extract_memories":
        texts = [t for t in data.get("user_messages", []) if isinstance(t, str)]
        existing = [e for e in data.get("existing", []) if isinstance(e, dict)]
        actions: list[dict[str, Any]] = []
        known = {_norm(str(e.get("text", ""))) for e in existing}
        for value in _directives(texts, "Remember:"):
            if _norm(value) not in known:
                known.add(_norm(value))
                actions.append({"op": "add", "text": value, "kind": "fact"})
        for value in _directives(texts, "Forget:"):
            actions += [{"op": "delete", "id": str(e.get("id"))} for e in existing
                        if _norm(str(e.get("text", ""))) == _norm(value)]
        return json.dumps({"actions": actions})
    lines = [line[len("User:"):].strip() for line in prompt.splitlines() if line.startswith("User:")]
    return ("Summary: " + " / ".join(lines))[:2_000] if lines else "Summary: (nothing new)"


def _tool_answer(last: Message, scenario: MockScenario) -> str:
    """`Tool <name> returned: <output as compact JSON>`, from the tool-result message being answered."""
    results = last.tool_results
    result = next((r for r in results if r.name == scenario.tool_name), results[0] if results else None)
    if result is None:
        return f"Tool {scenario.tool_name} returned no result."
    return f"Tool {result.name or scenario.tool_name} returned: {json.dumps(result.output, separators=(',', ':'))}"


def from_settings(settings: Settings) -> MockProvider | None:
    """The mock, tuned by `MOCK_TTFT_MS`, `MOCK_PACE_MS` and `MOCK_TOKENS`; only where enabled
    (`STAGE=local`, or `MOCK_PROVIDER=true`)."""
    if not settings.mock_provider:
        return None
    return MockProvider(ttft_ms=settings.mock_ttft_ms, pace_ms=settings.mock_pace_ms, tokens=settings.mock_tokens)
