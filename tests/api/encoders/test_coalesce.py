"""`coalesce_ready`: order kept, ready chunks joined, errors and cancellation passed through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from chatcore.api.encoders.coalesce import SLICE, coalesce_ready


async def burst(n: int) -> AsyncIterator[bytes]:
    for i in range(n):
        yield b"%d," % i


async def test_a_burst_is_joined_and_the_first_chunk_leaves_alone() -> None:
    writes = [w async for w in coalesce_ready(burst(300))]
    assert b"".join(writes) == b"".join(b"%d," % i for i in range(300))
    assert writes[0] == b"0,"  # the time-to-first-token chunk is not held for the burst
    assert len(writes) < 300 // SLICE + 5  # not one write per chunk


async def test_chunks_produced_while_the_writer_waits_are_each_written() -> None:
    gate = asyncio.Event()

    async def paced() -> AsyncIterator[bytes]:
        yield b"a"
        await gate.wait()
        yield b"b"

    stream = coalesce_ready(paced())
    assert await anext(stream) == b"a"  # delivered before the source can go on
    gate.set()
    assert [w async for w in stream] == [b"b"]


async def test_an_error_is_raised_after_the_chunks_before_it() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"x"
        yield b"y"
        raise RuntimeError("boom")

    received = b""
    with pytest.raises(RuntimeError, match="boom"):
        async for write in coalesce_ready(failing()):
            received += write
    assert received == b"xy"


async def test_closing_the_writer_stops_the_source() -> None:
    stopped = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"."
                await asyncio.sleep(0)
        finally:
            stopped.set()

    stream = coalesce_ready(endless())
    await anext(stream)
    await stream.aclose()  # what the server does when the client goes away
    assert stopped.is_set()
