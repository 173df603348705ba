"""A real boto3 `bedrock-runtime` client whose HTTP layer replays recorded bytes.

moto has no ConverseStream, and botocore's Stubber cannot return an event stream, so a
`before-send` hook answers with an `AWSResponse` over the recorded body: botocore's own
event-stream parser, error parsing and `EventStreamError` all run for real.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config


class ReplayBody:
    """The raw body botocore reads: yields the bytes in small slices, optionally then blocks."""

    def __init__(self, data: bytes, *, hold_open: bool = False, slice_size: int = 7) -> None:
        self.data = data
        self.hold_open = hold_open
        self.slice_size = slice_size
        self.closed = threading.Event()

    def stream(self, amt: int = 1024, decode_content: bool = False) -> Iterator[bytes]:
        for i in range(0, len(self.data), self.slice_size):
            if self.closed.is_set():
                return
            yield self.data[i:i + self.slice_size]
        if self.hold_open:
            # A slow model: nothing more until the client hangs up (close() below).
            self.closed.wait(60)

    def read(self, amt: int | None = None) -> bytes:
        return self.data

    def close(self) -> None:
        self.closed.set()


def bedrock_client_replaying(status: int, headers: dict[str, str], body: bytes | ReplayBody,
                             service: str = "bedrock-runtime", operation: str = "ConverseStream") -> Any:
    """A boto3 client (fake credentials, no retries) whose `operation` returns the recorded response."""
    raw = body if isinstance(body, ReplayBody) else ReplayBody(body)
    client = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing").client(
        service, region_name="us-east-1", config=Config(retries={"max_attempts": 1, "mode": "standard"}))

    def reply(request: Any, **_: Any) -> AWSResponse:
        return AWSResponse(request.url, status, headers, raw)

    client.meta.events.register_first(f"before-send.{service}.{operation}", reply)
    return client
