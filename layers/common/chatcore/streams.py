"""Small helpers for the async iterators the event stream is made of."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any


async def close_stream(stream: AsyncIterator[Any]) -> None:
    """Close an async generator now, so its `finally` blocks run before the response ends."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
