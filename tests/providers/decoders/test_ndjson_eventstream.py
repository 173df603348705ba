"""NDJSON and AWS event-stream decoding from arbitrary chunks."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.eventstream import ChecksumMismatch
from chatcore.providers.decoders.eventstream import EventStreamDecoder
from chatcore.providers.decoders.ndjson import NDJSONDecoder

FIXTURES = Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures" / "providers"


def test_ndjson_split_anywhere() -> None:
    body = '{"a": "é"}\n\n{"b": "\\u003c世界\\u003e"}\n{"c": 1}'.encode()
    for cut in range(len(body) + 1):
        decoder = NDJSONDecoder()
        out = decoder.feed(body[:cut]) + decoder.feed(body[cut:]) + decoder.flush()
        assert out == [{"a": "é"}, {"b": "<世界>"}, {"c": 1}]


def test_ndjson_bad_line_raises() -> None:
    with pytest.raises(ValueError):
        NDJSONDecoder().feed(b"{not json}\n")


def test_eventstream_frames_byte_by_byte_match_the_decoded_listing() -> None:
    import json

    data = (FIXTURES / "bedrock" / "converse_stream_text.eventstream").read_bytes()
    listing = [json.loads(line) for line in
               (FIXTURES / "bedrock" / "converse_stream_text.decoded.jsonl").read_text().splitlines() if line]
    decoder = EventStreamDecoder()
    frames = [frame for i in range(len(data)) for frame in decoder.feed(data[i:i + 1])]
    assert [(f.kind, f.name, f.payload) for f in frames] == [
        (item["message-type"], item["event-type"], item["payload"]) for item in listing]
    assert EventStreamDecoder().feed(data[:10]) == []  # a partial frame yields nothing yet


def test_eventstream_corruption_is_detected() -> None:
    data = bytearray((FIXTURES / "bedrock" / "converse_stream_text.eventstream").read_bytes())
    data[20] ^= 0xFF  # a flipped byte inside the first frame's headers
    with pytest.raises(ChecksumMismatch):
        EventStreamDecoder().feed(bytes(data))
