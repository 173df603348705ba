"""The exact JSON each adapter sends for a message with attachments (Bedrock through botocore's serializer)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from chatcore import errors
from chatcore.messages import Attachment, Message, ModelRequest
from chatcore.providers.bedrock import BedrockProvider
from chatcore.providers.ollama import OllamaProvider

from .bedrock_stub import bedrock_client_replaying
from .conftest import fixture_bytes, fixture_json
from .test_requests import _sent

IMAGE = Attachment("image/png", b"\x89PNG\r\n\x1a\nfake", "shot.png")
PDF = Attachment("application/pdf", b"%PDF-1.4 fake", "Q3 report.v2.pdf", pages=3)
B64_IMAGE = base64.b64encode(IMAGE.data).decode()
B64_PDF = base64.b64encode(PDF.data).decode()
REQUEST = ModelRequest(model="m", messages=(Message("user", "What is this?", attachments=(IMAGE, PDF)),))


async def test_openai_image_url_and_file_data() -> None:
    body = json.loads((await _sent("openai", REQUEST, "openai/chat_stream_usage.sse")).content)
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64_IMAGE}"}},
        {"type": "file", "file": {"filename": "Q3 report.v2.pdf", "file_data": f"data:application/pdf;base64,{B64_PDF}"}},
    ]}]


async def test_anthropic_image_and_document_blocks_before_the_text() -> None:
    body = json.loads((await _sent("anthropic", REQUEST, "anthropic/messages_stream_text.sse")).content)
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64_IMAGE}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": B64_PDF},
         "title": "Q3 report.v2.pdf"},
        {"type": "text", "text": "What is this?"},
    ]}]


async def test_gemini_inline_data() -> None:
    body = json.loads((await _sent("gemini", REQUEST, "gemini/stream_text.sse")).content)
    assert body["contents"] == [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": B64_IMAGE}},
        {"inlineData": {"mimeType": "application/pdf", "data": B64_PDF}},
        {"text": "What is this?"},
    ]}]


async def test_ollama_images_only() -> None:
    request = ModelRequest(model="llava", messages=(Message("user", "What is this?", attachments=(IMAGE,)),))
    body = json.loads((await _sent("ollama", request, "ollama/chat_stream.ndjson")).content)
    assert body["messages"] == [{"role": "user", "content": "What is this?", "images": [B64_IMAGE]}]
    with pytest.raises(errors.RequestError):
        OllamaProvider().build_body(REQUEST)


@pytest.mark.parametrize("text", ["What is this?", ""])
async def test_bedrock_raw_bytes_and_always_a_text_block(text: str) -> None:
    captured: list[Any] = []
    meta = fixture_json("bedrock/converse_stream_text.meta.json")
    client = bedrock_client_replaying(200, meta["headers"], fixture_bytes("bedrock/converse_stream_text.eventstream"))
    client.meta.events.register("before-call.bedrock-runtime.ConverseStream",
                                lambda params, **_: captured.append(json.loads(params["body"])))
    provider = BedrockProvider(region="us-east-1", runtime_client=client)
    request = ModelRequest(model="anthropic.claude", messages=(Message("user", text, attachments=(IMAGE, PDF)),))
    async for _ in provider.stream(request):
        pass
    # botocore serialized the raw bytes as base64 in the wire JSON.
    assert captured[0]["messages"] == [{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": B64_IMAGE}}},
        {"document": {"format": "pdf", "name": "Q3 report v2", "source": {"bytes": B64_PDF}}},
        {"text": text or "(attached)"},
    ]}]
