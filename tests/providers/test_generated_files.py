"""Generated files as the Gemini adapter streams them: an image model's `inlineData` part is one
`FileOutput` with the decoded bytes, whatever the chunking (the fixture is written by
`fixtures/build.py`), through the parser and the adapter's real `stream()`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from chatcore import errors
from chatcore.events import FileOutput, Finish, ProviderEvent, TextDelta
from chatcore.messages import Message, ModelRequest
from chatcore.providers.gemini import GeminiStreamParser
from chatcore.providers.streaming import parse_all

from .fixtures.build import tiny_png
from .test_fixture_streams import _provider_with_body

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "gemini" / "stream_inline_image.sse"
META = json.loads(FIXTURE.with_name("stream_inline_image.meta.json").read_text())


def _summary(chunks: list[bytes]) -> tuple[str, list[tuple[str, bytes]], str | None, errors.ProviderError | None]:
    events, error = parse_all(GeminiStreamParser("gemini", "m"), chunks)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    files = [(e.media_type, e.data) for e in events if isinstance(e, FileOutput)]
    finish = next((e.reason for e in events if isinstance(e, Finish)), None)
    return text, files, finish, error


def test_an_inline_data_part_is_one_file_output_with_the_decoded_bytes() -> None:
    text, files, finish, error = _summary([FIXTURE.read_bytes()])
    assert error is None
    assert text == "Here is a tiny banana — 香蕉:"
    assert files == [("image/png", tiny_png())]
    assert finish == "stop"


def test_the_image_stream_split_at_every_byte_and_fed_byte_by_byte() -> None:
    data = FIXTURE.read_bytes()
    reference = _summary([data])
    for offset in range(len(data) + 1):
        assert _summary([data[:offset], data[offset:]]) == reference, f"split at byte {offset}"
    assert _summary([data[i:i + 1] for i in range(len(data))]) == reference


def test_unreadable_inline_data_is_a_malformed_stream_not_a_file() -> None:
    chunk = {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "%%not base64"}}],
                                         "role": "model"}, "finishReason": "STOP", "index": 0}]}
    events, error = parse_all(GeminiStreamParser("gemini", "m"), [f"data: {json.dumps(chunk)}\r\n\r\n".encode()])
    assert not any(isinstance(e, FileOutput) for e in events)
    assert isinstance(error, errors.InStreamError) and error.retryable


def test_a_thought_image_is_not_an_answer_file() -> None:
    image = base64.b64encode(tiny_png()).decode()
    chunk = {"candidates": [{"content": {"parts": [
        {"inlineData": {"mimeType": "image/png", "data": image}, "thought": True},
        {"inlineData": {"mimeType": "image/png", "data": image}}], "role": "model"},
        "finishReason": "STOP", "index": 0}]}
    events, error = parse_all(GeminiStreamParser("gemini", "m"), [f"data: {json.dumps(chunk)}\r\n\r\n".encode()])
    assert error is None and [type(e) for e in events] == [FileOutput, Finish]


async def test_the_adapter_streams_the_generated_image() -> None:
    provider, client = _provider_with_body("gemini", META["status"], META["headers"], FIXTURE.read_bytes())
    events: list[ProviderEvent] = []
    async with client:
        async for event in provider.stream(ModelRequest(model="gemini-2.5-flash-image",
                                                        messages=(Message("user", "Draw a banana"),))):
            events.append(event)
    assert [(e.media_type, e.data) for e in events if isinstance(e, FileOutput)] == [("image/png", tiny_png())]
    assert isinstance(events[-1], Finish)
