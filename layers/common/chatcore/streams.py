"""Plumbing for the async iterators the event stream is made of: closing them by structure, and
waiting for the first item so that failures before it can still become HTTP errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")


@asynccontextmanager
async def closing(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """`async with closing(stream) as s:` closes `stream` on exit (its `finally` blocks run now, not at
    garbage collection), like `contextlib.aclosing` but for any async iterator."""
    try:
        yield stream
    finally:
        aclose: Any = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def primed(stream: AsyncIterator[T]) -> tuple[T, AsyncIterator[T]]:
    """The first item of `stream` (its failure raises here), and the whole stream, first item included.

    The returned stream closes `stream` when it ends or is closed, so every wrapper's cleanup
    (storing the answer, settling limits) runs when the response ends or the client leaves.
    """
    first = await anext(aiter(stream))

    async def rest() -> AsyncIterator[T]:
        async with closing(stream) as source:
            yield first
            async for item in source:
                yield item

    return first, rest()
