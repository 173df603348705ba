"""Server-sent events decoded per the WHATWG spec, incrementally, from arbitrary byte chunks.

Handles LF, CR and CRLF line ends (including a CR at the end of one read and its LF at the start
of the next), UTF-8 characters split across reads, comments, multi-line `data:`, a leading BOM.
Lines that are not SSE fields at all (Gemini appends a raw JSON error blob after its events) are
reported as `raw` lines so adapters can notice them instead of silently dropping them.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class RawLine:
    """A line with no `field:` shape (not part of the SSE grammar)."""

    text: str


class SSEDecoder:
    """Feed bytes, get back complete events (and raw lines) in order."""

    __slots__ = ("_buffer", "_data", "_event", "_id", "_last_was_cr", "_started", "_utf8")

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._last_was_cr = False
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent | RawLine]:
        text = self._utf8.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._last_was_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across reads
        self._last_was_cr = text.endswith("\r")
        self._buffer += text
        return self._drain()

    def flush(self) -> list[SSEEvent | RawLine]:
        """End of stream: a final unterminated line is processed, an undispatched event dropped."""
        self._buffer += self._utf8.decode(b"", final=True)
        out = self._drain()
        if self._buffer:
            line, self._buffer = self._buffer, ""
            out.extend(self._line(line))
        return out

    def _drain(self) -> list[SSEEvent | RawLine]:
        out: list[SSEEvent | RawLine] = []
        buffer = self._buffer
        start = 0
        length = len(buffer)
        while start < length:
            lf = buffer.find("\n", start)
            cr = buffer.find("\r", start, lf if lf != -1 else length)
            if cr != -1:
                end, nxt = cr, cr + 1
                if nxt < length and buffer[nxt] == "\n":
                    nxt += 1
                elif nxt == length:
                    pass  # a lone CR at the end: its possible LF is skipped by feed()
            elif lf != -1:
                end, nxt = lf, lf + 1
            else:
                break
            out.extend(self._line(buffer[start:end]))
            start = nxt
        self._buffer = buffer[start:]
        return out

    def _line(self, line: str) -> list[SSEEvent | RawLine]:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return []
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" or (sep and _is_field_name(name)):
            pass  # unknown fields are ignored per the spec
        else:
            return [RawLine(line)]
        return []

    def _dispatch(self) -> list[SSEEvent | RawLine]:
        if not self._data or self._data == [""]:
            # The spec dispatches nothing when the data buffer is empty (a lone `data:` line).
            self._event = ""
            self._data = []
            return []
        event = SSEEvent(self._event or "message", "\n".join(self._data), self._id)
        self._event = ""
        self._data = []
        return [event]


def _is_field_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_" for c in name)
