"""Parse cost per wire event for each provider format (target: at most 20 µs per event).

Each recorded text fixture is stretched into a long stream by repeating its content events
(OpenAI/compat/Anthropic/Gemini SSE, Ollama NDJSON, Bedrock event-stream frames), then fed to the
adapter's pure parser in 1 KiB reads, as a TCP socket would deliver it. Only parsing is timed:
no network, no event loop.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chatcore.providers.anthropic import AnthropicStreamParser
from chatcore.providers.bedrock import BedrockStreamParser
from chatcore.providers.gemini import GeminiStreamParser
from chatcore.providers.ollama import OllamaStreamParser
from chatcore.providers.openai import OpenAIStreamParser
from chatcore.providers.streaming import StreamParser, parse_all

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "providers"
TARGET_US = 20.0
READ_SIZE = 1024


@dataclass(frozen=True)
class Format:
    label: str
    fixture: str
    parser: Callable[[], StreamParser]
    split: Callable[[bytes], list[bytes]]  # the body's wire events, each with its framing
    is_content: Callable[[bytes], bool]  # which events to repeat


def _sse_events(separator: bytes) -> Callable[[bytes], list[bytes]]:
    def split(body: bytes) -> list[bytes]:
        return [part + separator for part in body.split(separator) if part]

    return split


def _lines(body: bytes) -> list[bytes]:
    return [line + b"\n" for line in body.split(b"\n") if line]


def _frames(body: bytes) -> list[bytes]:
    frames, offset = [], 0
    while offset < len(body):
        (length,) = struct.unpack(">I", body[offset:offset + 4])  # prelude: total frame length
        frames.append(body[offset:offset + length])
        offset += length
    return frames


FORMATS = [
    Format("OpenAI Chat Completions (SSE)", "openai/chat_stream_usage.sse", OpenAIStreamParser,
           _sse_events(b"\n\n"), lambda e: b'"content":"' in e and b'"finish_reason":null' in e),
    Format("OpenRouter (SSE with comments)", "openai_compat/openrouter_stream_usage.sse", OpenAIStreamParser,
           _sse_events(b"\n\n"), lambda e: b'"content":"' in e and b'"finish_reason":null' in e),
    Format("Anthropic Messages (SSE)", "anthropic/messages_stream_text.sse", AnthropicStreamParser,
           _sse_events(b"\n\n"), lambda e: b"content_block_delta" in e),
    Format("Gemini (SSE, CRLF)", "gemini/stream_text.sse", GeminiStreamParser,
           _sse_events(b"\r\n\r\n"), lambda e: b'"finishReason"' not in e),
    Format("Ollama /api/chat (NDJSON)", "ollama/chat_stream.ndjson", OllamaStreamParser,
           _lines, lambda e: b'"done":false' in e),
    Format("Bedrock ConverseStream (event stream)", "bedrock/converse_stream_text.eventstream", BedrockStreamParser,
           _frames, lambda e: b"contentBlockDelta" in e),
]


def long_stream(fmt: Format, repeats: int) -> tuple[bytes, int]:
    """The fixture with its content events repeated `repeats` times, and its count of wire events."""
    events = fmt.split((FIXTURES / fmt.fixture).read_bytes())
    first = next(i for i, e in enumerate(events) if fmt.is_content(e))
    last = max(i for i, e in enumerate(events) if fmt.is_content(e))
    content = events[first:last + 1]
    stream = events[:first] + content * repeats + events[last + 1:]
    return b"".join(stream), len(stream)


def measure(fmt: Format, repeats: int = 400, rounds: int = 5) -> tuple[float, int]:
    """Best-of-`rounds` microseconds per wire event, and the number of events per stream."""
    body, count = long_stream(fmt, repeats)
    reads = [body[i:i + READ_SIZE] for i in range(0, len(body), READ_SIZE)]
    _, error = parse_all(fmt.parser(), reads)
    if error is not None:
        raise RuntimeError(f"{fmt.fixture}: the stretched stream did not parse: {error!r}")
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        parse_all(fmt.parser(), reads)
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6, count


def run() -> str:
    """The markdown section for docs/benchmarks.md."""
    rows = []
    for fmt in FORMATS:
        per_event, count = measure(fmt)
        verdict = "ok" if per_event <= TARGET_US else "OVER TARGET"
        rows.append(f"| {fmt.label} | `{fmt.fixture}` | {count} | {per_event:.2f} | {1e6 / per_event:,.0f} | {verdict} |")
    return "\n".join([
        "## Provider stream parsing",
        "",
        f"Cost of the pure parsers per wire event (target ≤ {TARGET_US:.0f} µs), decoding bytes into typed events.",
        "Each fixture's content events are repeated 400× into one long stream, fed in 1 KiB reads; best of 5.",
        "",
        "| format | fixture | events per stream | µs / event | events / s | target |",
        "|---|---|---:|---:|---:|---|",
        *rows,
        "",
    ])


if __name__ == "__main__":
    print(run())
