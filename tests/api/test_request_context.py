"""Each chat request is named: the Lambda request id (or a fresh id) in a header and the log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
from chatcore.observability import get_logger

BODY = {"id": "conv-ctx", "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_lambda_request_id_names_the_response_and_the_log_line(chat_server: Callable[..., str]) -> None:
    base = chat_server()
    handler = Records()
    chat_logger = get_logger()._logger  # the Powertools logger's own `logging.Logger` ("chat")
    chat_logger.addHandler(handler)
    try:
        context = {"request_id": "8f1d3c2e-lambda-request", "deadline": 4102444800000}
        response = httpx.post(f"{base}/api/chat", json=BODY, timeout=30,
                              headers={"x-amzn-lambda-context": json.dumps(context)})
    finally:
        chat_logger.removeHandler(handler)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "8f1d3c2e-lambda-request"
    lines = [r for r in handler.records if r.getMessage() == "chat request"]
    assert len(lines) == 1, "one log line per request"
    assert getattr(lines[0], "request_id", None) == "8f1d3c2e-lambda-request"
    assert getattr(lines[0], "conversation_id", None) == "conv-ctx"


def test_without_lambda_context_each_request_gets_its_own_id(chat_server: Callable[..., str]) -> None:
    base = chat_server()
    first = httpx.post(f"{base}/api/chat", json=BODY, timeout=30)
    second = httpx.post(f"{base}/api/chat", json=BODY, timeout=30)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-request-id"] and second.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
