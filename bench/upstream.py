"""A local OpenAI Chat Completions endpoint for benchmarks: streams N tokens at a set pace.

The wire format is exactly what api.openai.com sends with `stream_options.include_usage`: a role
chunk, one chunk per token, a `finish_reason` chunk, a usage chunk with empty `choices`, then
`data: [DONE]`, in HTTP/1.1 chunked encoding on a keep-alive connection. Written on bare asyncio
streams so the upstream itself costs next to nothing and the measurement is the app's.

The model name tunes one request, like the mock provider: `bench?tokens=5000&pace_ms=0&ttft_ms=0`.

    python -m bench.upstream --port 9000      # serve until interrupted
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What one streamed answer looks like."""

    tokens: int = 20
    pace_ms: float = 0.0
    ttft_ms: float = 0.0

    @classmethod
    def from_model(cls, model: str, default: StreamSpec) -> StreamSpec:
        _, _, query = model.partition("?")
        params = dict(parse_qsl(query))
        return cls(
            tokens=int(params.get("tokens", default.tokens)),
            pace_ms=float(params.get("pace_ms", default.pace_ms)),
            ttft_ms=float(params.get("ttft_ms", default.ttft_ms)),
        )


def _event(payload: dict[str, object]) -> bytes:
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)  # one HTTP chunk per SSE event, as OpenAI sends them


def openai_stream(model: str, spec: StreamSpec, prompt_tokens: int) -> tuple[bytes, list[bytes], bytes]:
    """The response as (head: role chunk, one piece per token, tail: finish + usage + [DONE] + end)."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "service_tier": "default", "system_fingerprint": "fp_bench"}

    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _event({**base, "choices": [choice], "usage": None, "obfuscation": ""})

    head = chunk({"role": "assistant", "content": "", "refusal": None})
    tokens = [chunk({"content": WORDS[i % len(WORDS)] + " "}) for i in range(spec.tokens)]
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": spec.tokens,
             "total_tokens": prompt_tokens + spec.tokens,
             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                           "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    tail = chunk({}, "stop") + _event({**base, "choices": [], "usage": usage, "obfuscation": ""})
    tail += b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
    return head, tokens, tail


_HEADERS = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\nconnection: keep-alive\r\n\r\n")
_MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model", "owned_by": "bench"}]}).encode()


class OpenAIUpstream:
    """The server. `start()` binds 127.0.0.1 (port 0 picks a free one); `port` is then set."""

    def __init__(self, default: StreamSpec | None = None) -> None:
        self.default = default or StreamSpec()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and path.endswith("/models"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(_MODELS), _MODELS))
                elif method == "POST" and path.endswith("/chat/completions"):
                    await self._stream(json.loads(body), writer)
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _stream(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        model = str(request.get("model", "bench"))
        spec = StreamSpec.from_model(model, self.default)
        messages = request.get("messages") or []
        prompt_tokens = sum(len(str(m.get("content", ""))) // 4 + 1 for m in messages if isinstance(m, dict))
        head, tokens, tail = openai_stream(model.partition("?")[0], spec, prompt_tokens)
        writer.write(_HEADERS + head)
        if spec.ttft_ms:
            await writer.drain()
            await asyncio.sleep(spec.ttft_ms / 1000)
        if spec.pace_ms <= 0:
            writer.write(b"".join(tokens) + tail)  # no delay: as fast as the socket takes it
            return
        for index, token in enumerate(tokens):
            if index:
                await asyncio.sleep(spec.pace_ms / 1000)
            writer.write(token)
            await writer.drain()
        writer.write(tail)


async def _serve(port: int, spec: StreamSpec) -> None:
    upstream = OpenAIUpstream(spec)
    bound = await upstream.start(port)
    print(f"listening on http://127.0.0.1:{bound}/v1", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    """Serve until interrupted; prints the base URL first (the bench reads it from stdout)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--pace-ms", type=float, default=0.0)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, StreamSpec(args.tokens, args.pace_ms, args.ttft_ms)))


if __name__ == "__main__":
    main()
