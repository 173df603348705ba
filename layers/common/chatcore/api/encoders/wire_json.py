"""Compact JSON as UTF-8 bytes, the payload of every wire chunk."""

from __future__ import annotations

import json
from typing import Any

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
