"""Join the encoded chunks that are ready at the same moment into one write.

A provider that sends a burst (a fast model, or many tokens in one network read) would otherwise
cost one ASGI message and one socket write per token. The encoder runs in its own task and
fills a bounded queue; the response takes everything queued at once. The first chunk, and a
lone token, are written as soon as they are encoded (the writer runs whenever the encoder waits
for input, and the encoder steps aside after its first chunk and every `SLICE` chunks), so
streaming is never delayed, and the bound keeps backpressure from a slow client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from chatcore import background
from chatcore.observability import get_logger
from chatcore.streams import closing

MAX_PENDING = 256  # chunks encoded ahead of the client; then the encoder waits for the writer
SLICE = 64  # in a long burst, hand over to the writer every this many chunks


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


PING = b": ping\n\n"  # an SSE comment: every SSE client (the AI SDK's, the OpenAI SDKs') ignores it


async def coalesce_ready(chunks: AsyncIterator[bytes], *, failure: bytes = b"",
                         keepalive_s: float | None = None) -> AsyncIterator[bytes]:
    """Yield `chunks` in order, each yield joining every chunk already produced.

    `failure` is the protocol's in-stream error ending, sent if encoding itself fails (a bug must not
    end a stream silently); `keepalive_s` sends a `: ping` comment after that long without output
    (long reasoning, slow tools), so proxies and browsers do not cut a silent stream.
    """
    queue: asyncio.Queue[bytes | _End] = asyncio.Queue(MAX_PENDING)

    async def produce() -> None:
        produced = 0
        # Closed on every exit, cancellation included: the source's cleanup runs now, not at GC.
        async with closing(chunks) as source:
            try:
                async for chunk in source:
                    await queue.put(chunk)
                    produced += 1
                    # The first chunk is the time to first token: let the writer send it now, not after
                    # the whole burst (and the request's end-of-stream bookkeeping) has been encoded.
                    if produced == 1 or produced % SLICE == 0:
                        await asyncio.sleep(0)
            except Exception as exc:  # handed to the writer, raised there after the chunks before it
                await queue.put(_End(exc))
            else:
                await queue.put(_End(None))

    # Referenced, not drained: it is awaited below, and the end of one response must not wait for
    # the encoders of other responses still streaming (their own clean-up is tracked work).
    producer = background.spawn(produce(), drained=False)
    try:
        while True:
            if keepalive_s is None:
                item = await queue.get()
            else:
                try:
                    item = await asyncio.wait_for(queue.get(), keepalive_s)
                except TimeoutError:
                    yield PING
                    continue
            batch: list[bytes] = []
            while not isinstance(item, _End):
                batch.append(item)
                if queue.empty():
                    break
                item = queue.get_nowait()
            if batch:
                yield b"".join(batch)
            if isinstance(item, _End):
                if item.error is not None:
                    get_logger().error("encoding failed", exc_info=item.error)
                    if not failure:
                        raise item.error
                    yield failure
                return
    finally:
        # The client went away or the stream ended: stop the encoder (and so the upstream call).
        # Cancelled exactly once, and awaited through a shield: a cancel scope that keeps cancelling
        # this task (Starlette's, on disconnect) must not interrupt the encoder's own clean-up (closing
        # the upstream connection, storing the partial answer), which carries on as tracked work.
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(producer)
