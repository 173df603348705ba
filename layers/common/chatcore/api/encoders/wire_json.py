"""What every SSE wire encoder shares: the response headers, the end marker, and compact JSON as
UTF-8 bytes (the payload of every chunk)."""

from __future__ import annotations

import json
from typing import Any

SSE_HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache, no-transform",
    "connection": "keep-alive",
    "x-accel-buffering": "no",  # proxies (nginx and others) must not buffer the stream
}
DONE = b"data: [DONE]\n\n"

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_compact_ascii = json.JSONEncoder(separators=(",", ":")).encode


def json_bytes(payload: Any) -> bytes:
    """`payload` as compact JSON bytes; never raises on text a provider sent.

    A lone surrogate (half of an emoji split by an upstream) has no UTF-8 form, so that rare
    payload is written with `\\u` escapes instead, which every JSON parser reads back unchanged;
    raising here would cut the stream off without an error chunk.
    """
    text = _compact(payload)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _compact_ascii(payload).encode()
