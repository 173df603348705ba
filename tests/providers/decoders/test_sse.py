"""The SSE decoder against the WHATWG rules, fed in every possible way."""

from __future__ import annotations

from chatcore.providers.decoders.sse import RawLine, SSEDecoder, SSEEvent
from hypothesis import given, settings
from hypothesis import strategies as st


def decode(*chunks: bytes) -> list[SSEEvent | RawLine]:
    decoder = SSEDecoder()
    out: list[SSEEvent | RawLine] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out + decoder.flush()


def test_line_endings_lf_crlf_cr_are_equivalent() -> None:
    expected = [SSEEvent("message", "a"), SSEEvent("message", "b")]
    for eol in (b"\n", b"\r\n", b"\r"):
        assert decode(b"data: a" + eol + eol + b"data: b" + eol + eol) == expected


def test_crlf_split_between_reads_is_one_line_end() -> None:
    # If the LF after a CR were taken as a second line end, it would dispatch an empty event early.
    assert decode(b"data: a\r", b"\ndata: b\r\n\r\n") == [SSEEvent("message", "a\nb")]


def test_multiline_data_comments_fields_and_bom() -> None:
    body = (b"\xef\xbb\xbf: keep-alive\n\nevent: delta\nid: 7\nretry: 100\ndata: one\ndata:two\n"
            b"data:  three\nunknown: x\n\n")
    assert decode(body) == [SSEEvent("delta", "one\ntwo\n three", "7")]


def test_empty_data_is_not_dispatched_and_event_type_resets() -> None:
    assert decode(b"event: ping\n\ndata:\n\ndata: x\n\n") == [SSEEvent("message", "x")]


def test_utf8_split_inside_a_character() -> None:
    data = "data: 世界 👋\n\n".encode()
    for cut in range(len(data) + 1):
        assert decode(data[:cut], data[cut:]) == [SSEEvent("message", "世界 👋")]


def test_unterminated_last_event_is_dropped_and_raw_lines_reported() -> None:
    assert decode(b"data: x") == []
    assert decode(b'{\n  "error": 1\n}\n') == [RawLine("{"), RawLine('  "error": 1'), RawLine("}")]


@settings(max_examples=200, deadline=None, database=None)  # no .hypothesis/ folder in the repo
@given(st.lists(st.sampled_from(["data: é", "data: 世", "event: e", ": c", "", "id: 1", "{raw"]), max_size=30),
       st.sampled_from(["\n", "\r\n", "\r"]), st.data())
def test_any_chunking_decodes_like_the_whole(lines: list[str], eol: str, data: st.DataObject) -> None:
    body = (eol.join(lines) + eol).encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert decode(*pieces) == decode(body)
