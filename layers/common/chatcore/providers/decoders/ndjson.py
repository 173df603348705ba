"""Newline-delimited JSON, incrementally from arbitrary byte chunks."""

from __future__ import annotations

import json
from typing import Any


class NDJSONDecoder:
    """Feed bytes, get back parsed objects. Splits only at LF (never inside a UTF-8 character).

    A line that is not valid JSON raises `ValueError`; adapters turn that into a provider error.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Any]:
        if b"\n" not in chunk:
            self._buffer += chunk
            return []
        *lines, rest = (self._buffer + chunk).split(b"\n")
        self._buffer = rest
        return [json.loads(line) for line in lines if line.strip()]

    def flush(self) -> list[Any]:
        """End of body: an unterminated last line is parsed too."""
        line, self._buffer = self._buffer, b""
        return [json.loads(line)] if line.strip() else []
