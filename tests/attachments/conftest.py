"""Fixtures for attachments: a bucket in the emulator's S3, the chat app wired with DynamoDB memory and the
file store, and a recording OpenAI-format upstream on 127.0.0.1."""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from chatcore.api.app import Components, create_app
from chatcore.attachments.service import Attachments
from chatcore.attachments.store import FileStore
from chatcore.conversations.memory import DynamoMemory
from chatcore.conversations.store import ConversationStore
from chatcore.limits import NoLimits
from chatcore.providers import ProviderRegistry
from chatcore.providers.openai import OpenAIProvider
from chatcore.settings import Settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from devtools.template_buckets import create_attachments_bucket
from tests import moto_dynamodb
from tests.conversations.conftest import HeaderAuthenticator
from tests.moto_dynamodb import Table


def png(width: int = 2, height: int = 3) -> bytes:
    """A real, minimal PNG of `width` x `height` grey pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG's markers up to its frame header (APP0, then SOF0): all the checks read."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
       b"2 0 obj << /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >> endobj\n"
       b"3 0 obj << /Type /Page /Parent 2 0 R >> endobj\n4 0 obj << /Type /Page /Parent 2 0 R >> endobj\n%%EOF\n")


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


@dataclass
class Upstream:
    """An OpenAI Chat Completions server that records every request body and answers `reply`."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    reply: str = "I see it."


def recording_app(upstream: Upstream) -> Starlette:
    async def completions(request: Request) -> StreamingResponse:
        upstream.bodies.append(json.loads(await request.body()))

        async def events() -> Any:
            chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-test",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": upstream.reply}}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            done = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-test",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 3}}
            yield f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@pytest.fixture
def upstream(serve_asgi: Callable[..., str]) -> Upstream:
    recorder = Upstream()
    recorder.url = serve_asgi(recording_app(recorder))
    return recorder


@pytest.fixture
def s3(aws_emulator: Any) -> Any:
    return moto_dynamodb.client("s3")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"attachments-{uuid.uuid4().hex[:12]}"
    create_attachments_bucket(s3, name)
    return name


@pytest.fixture
def file_settings(table: Table, bucket: str, aws_emulator: Any) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base = Settings(stage="test", default_model="mock/echo", mock_ttft_ms=0.0, mock_pace_ms=0.0,
                        cors_in_app=False, memory="dynamodb", table_name=table.name,
                        dynamodb_endpoint_url=table.endpoint, summary_model="mock/echo", summary_trigger_tokens=0,
                        attachments_bucket=bucket, s3_endpoint_url=aws_emulator.endpoint,
                        max_chat_body_bytes=6_000_000)
        return dataclasses.replace(base, **overrides)

    return make


@dataclass
class FileApp:
    url: str
    store: ConversationStore
    files: FileStore
    upstream: Upstream


@pytest.fixture
def file_app(serve_asgi: Callable[..., str], dynamodb: Any, s3: Any, upstream: Upstream,
             file_settings: Callable[..., Settings]) -> Callable[..., FileApp]:
    """Factory: the chat app with DynamoDB memory, the file store and `openai/...` at the recording upstream."""

    def start(**overrides: Any) -> FileApp:
        settings = file_settings(**overrides)
        openai = OpenAIProvider(api_key="sk-test", base_url=f"{upstream.url}/v1")
        registry = ProviderRegistry(settings, overrides={"openai": openai})
        conversations = ConversationStore(settings, client=dynamodb)
        files = FileStore(settings, s3=s3, dynamodb=dynamodb)
        components = Components(settings=settings, providers=registry, authenticator=HeaderAuthenticator(),
                                limiter=NoLimits(), memory=DynamoMemory(settings, conversations),
                                conversations=conversations, attachments=Attachments(settings, files))
        return FileApp(serve_asgi(create_app(components=components)), conversations, files, upstream)

    return start


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"
