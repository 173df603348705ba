"""Each chat request is named: the Lambda request id (or a fresh id) in a header and the log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import pytest

BODY = {"id": "conv-ctx", "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}


def test_lambda_request_id_names_the_response_and_the_log_line(
        chat_server: Callable[..., str], capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    base = chat_server()
    context = {"request_id": "8f1d3c2e-lambda-request", "deadline": 4102444800000}
    with caplog.at_level(logging.INFO):
        response = httpx.post(f"{base}/api/chat", json=BODY, timeout=30,
                              headers={"x-amzn-lambda-context": json.dumps(context)})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "8f1d3c2e-lambda-request"
    out, err = capfd.readouterr()
    logged = "\n".join([out, err, caplog.text])
    lines = [line for line in logged.splitlines() if "chat request" in line and "8f1d3c2e-lambda-request" in line]
    assert lines, "the request's log line carries its request id"
    assert "conv-ctx" in lines[0]


def test_without_lambda_context_each_request_gets_its_own_id(chat_server: Callable[..., str]) -> None:
    base = chat_server()
    first = httpx.post(f"{base}/api/chat", json=BODY, timeout=30)
    second = httpx.post(f"{base}/api/chat", json=BODY, timeout=30)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-request-id"] and second.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
