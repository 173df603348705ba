"""Newline-delimited JSON, incrementally from arbitrary byte chunks."""

from __future__ import annotations

import json
from typing import Any


class NDJSONDecoder:
    """Feed bytes, get back parsed objects; splits only at LF, so UTF-8 is never cut."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Any]:
        self._buffer += chunk
        if b"\n" not in self._buffer:
            return []
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def flush(self) -> list[Any]:
        line, self._buffer = self._buffer, b""
        return [json.loads(line)] if line.strip() else []
