"""Cancellation reaches the upstream: when the client goes away or a clock runs out, the adapter
closes its connection, and a real 127.0.0.1 server that streams forever sees the disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from chatcore import errors
from chatcore.clocks import Clocks, DeadlineExceededError, timed
from chatcore.events import TextDelta
from chatcore.messages import Message, ModelRequest
from chatcore.providers.anthropic import AnthropicProvider
from chatcore.providers.bedrock import BedrockProvider
from chatcore.providers.gemini import GeminiProvider
from chatcore.providers.ollama import OllamaProvider
from chatcore.providers.openai import OpenAIProvider

from .bedrock_stub import ReplayBody, bedrock_client_replaying
from .conftest import fixture_bytes

WAIT_S = 30.0  # generous upper bound for a loaded CI machine; never a timing assertion

# Per adapter: (content type, opening bytes, a body piece repeated forever, provider factory).
UPSTREAMS: dict[str, tuple[str, bytes, bytes, Callable[[str], Any]]] = {
    "openai": ("text/event-stream", b"",
               b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"tok "}}]}\n\n',
               lambda url: OpenAIProvider(api_key="k", base_url=f"{url}/v1")),
    "anthropic": ("text/event-stream",
                  b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"m",'
                  b'"usage":{"input_tokens":3,"output_tokens":1}}}\n\n',
                  b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                  b'"delta":{"type":"text_delta","text":"tok "}}\n\n',
                  lambda url: AnthropicProvider(api_key="k", base_url=url)),
    "gemini": ("text/event-stream", b"",
               b'data: {"candidates": [{"content": {"parts": [{"text": "tok "}],"role": "model"}}]}\r\n\r\n',
               lambda url: GeminiProvider(api_key="k", base_url=url)),
    "ollama": ("application/x-ndjson", b"",
               b'{"model":"m","message":{"role":"assistant","content":"tok "},"done":false}\n',
               lambda url: OllamaProvider(base_url=url)),
}


class EndlessUpstream:
    """A minimal HTTP/1.1 server that streams a chunked body forever, recording when the client hangs up."""

    def __init__(self, content_type: str, opening: bytes, piece: bytes, *, pieces_before_stall: int | None = None):
        self.content_type = content_type
        self.opening = opening
        self.piece = piece
        self.pieces_before_stall = pieces_before_stall
        self.disconnected = asyncio.Event()
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            self.requests += 1
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + self.content_type.encode()
                         + b"\r\ntransfer-encoding: chunked\r\n\r\n")
            sent = 0
            while True:
                stalled = self.pieces_before_stall is not None and sent >= self.pieces_before_stall
                if not stalled:
                    data = (self.opening if sent == 0 else b"") + self.piece
                    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    await writer.drain()
                    sent += 1
                # Pace the stream; a read returning b"" means the client closed its side.
                try:
                    if await asyncio.wait_for(reader.read(1), 0.02) == b"":
                        break
                except TimeoutError:
                    pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.disconnected.set()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


REQUEST = ModelRequest(model="m", messages=(Message("user", "hi"),))


def _clocks(*, first: float = 30.0, idle: float = 30.0, total: float = 60.0) -> Clocks:
    return Clocks.start(first_token_s=first, idle_s=idle, total_s=total)


@pytest.mark.parametrize("adapter", sorted(UPSTREAMS))
async def test_client_leaving_closes_the_upstream(adapter: str) -> None:
    content_type, opening, piece, make = UPSTREAMS[adapter]
    upstream = EndlessUpstream(content_type, opening, piece)
    async with upstream as url:
        texts = 0
        async with contextlib.aclosing(timed(make(url).stream(REQUEST), _clocks())) as events:
            async for event in events:
                texts += isinstance(event, TextDelta)
                if texts == 3:
                    break  # the client went away
        await asyncio.wait_for(upstream.disconnected.wait(), WAIT_S)
    assert texts == 3 and upstream.requests == 1


@pytest.mark.parametrize("adapter", sorted(UPSTREAMS))
async def test_deadline_closes_the_upstream(adapter: str) -> None:
    content_type, opening, piece, make = UPSTREAMS[adapter]
    upstream = EndlessUpstream(content_type, opening, piece)
    async with upstream as url:
        with pytest.raises(DeadlineExceededError):
            async for _ in timed(make(url).stream(REQUEST), _clocks(total=0.3)):
                pass
        await asyncio.wait_for(upstream.disconnected.wait(), WAIT_S)


@pytest.mark.parametrize("adapter", sorted(UPSTREAMS))
async def test_idle_gap_closes_the_upstream(adapter: str) -> None:
    """The upstream sends one token and then stays silent for good, so the idle clock can only run out
    in that silence: however slow the machine, no gap between two tokens can be taken for a stall
    (the first token has the generous first-token clock; the idle clock starts after it)."""
    content_type, opening, piece, make = UPSTREAMS[adapter]
    upstream = EndlessUpstream(content_type, opening, piece, pieces_before_stall=1)
    async with upstream as url:
        seen: list[Any] = []
        with pytest.raises(errors.ProviderTimeoutError) as info:
            async for event in timed(make(url).stream(REQUEST), _clocks(first=WAIT_S, idle=0.5, total=2 * WAIT_S)):
                seen.append(event)
        assert not isinstance(info.value, DeadlineExceededError)
        assert "between tokens" in info.value.message
        assert sum(isinstance(e, TextDelta) for e in seen) == 1
        await asyncio.wait_for(upstream.disconnected.wait(), WAIT_S)


async def test_bedrock_client_leaving_closes_the_boto3_stream() -> None:
    """The worker thread's event stream is closed (and the thread released) when the consumer leaves."""
    frames = fixture_bytes("bedrock/converse_stream_text.eventstream")
    # Everything up to the messageStop frame, then silence until closed: a model still "thinking".
    body = ReplayBody(frames[: frames.index(b"messageStop") - 40], hold_open=True)
    client = bedrock_client_replaying(200, {"content-type": "application/vnd.amazon.eventstream"}, body)
    provider = BedrockProvider(region="us-east-1", runtime_client=client)
    texts = 0
    async with contextlib.aclosing(timed(provider.stream(REQUEST), _clocks())) as events:
        async for event in events:
            texts += isinstance(event, TextDelta)
            if texts == 2:
                break
    assert await asyncio.to_thread(body.closed.wait, WAIT_S)


async def test_bedrock_deadline_closes_the_boto3_stream() -> None:
    frames = fixture_bytes("bedrock/converse_stream_text.eventstream")
    body = ReplayBody(frames[: frames.index(b"messageStop") - 40], hold_open=True)
    client = bedrock_client_replaying(200, {"content-type": "application/vnd.amazon.eventstream"}, body)
    provider = BedrockProvider(region="us-east-1", runtime_client=client)
    with pytest.raises(DeadlineExceededError):
        async for _ in timed(provider.stream(REQUEST), _clocks(total=0.5)):
            pass
    assert await asyncio.to_thread(body.closed.wait, WAIT_S)


