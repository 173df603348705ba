"""The OpenAI-compatible API judged by the official `openai` npm client (pinned in tests/openai_js).

`tests/openai_js/run.mjs` runs the client under Node against the app on a real socket; these tests
check what it assembled and which error class it raised.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chatcore.providers.mock import tokenize

HARNESS = Path(__file__).resolve().parents[1] / "openai_js"
NODE = shutil.which("node")
SUBPROCESS_TIMEOUT_S = 120  # generous: Node start-up on a loaded CI machine

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node is not installed (needed to run the openai npm client)"),
    pytest.mark.skipif(not (HARNESS / "node_modules" / "openai").is_dir(),
                       reason="tests/openai_js/node_modules is missing: run `npm ci --prefix tests/openai_js` (make setup)"),
]


def run(url: str, scenario: str, model: str = "mock/echo", text: str = "hello", *headers: str,
        tool_output: str | None = None) -> dict[str, Any]:
    args = [NODE or "node", str(HARNESS / "run.mjs"), "--base-url", f"{url}/v1", "--scenario", scenario,
            "--model", model, "--text", text, "--timeout-ms", str((SUBPROCESS_TIMEOUT_S - 10) * 1000)]
    if tool_output is not None:
        args += ["--tool-output", tool_output]
    for header in headers:
        args += ["--header", header]
    done = subprocess.run(args, cwd=HARNESS, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, f"run.mjs failed ({done.returncode}): {done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_streaming_with_usage(chat_server: Callable[..., str]) -> None:
    url = chat_server(mock_pace_ms=1.0)  # separate network writes per token
    result = run(url, "stream", "mock/echo", 'Quotes " and ünïcödé 🎉')
    expected = 'You said: Quotes " and ünïcödé 🎉'
    assert result["ok"], result["error"]
    assert result["text"] == expected and result["finishReasons"] == ["stop"]
    assert result["model"] == "mock/echo"
    assert result["usage"]["completion_tokens"] == len(tokenize(expected))
    assert result["usage"]["total_tokens"] == result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"]
    assert result["headers"]["x-chat-deployment"] == "mock-fast" and result["headers"]["x-request-id"]


def test_non_streaming(chat_server: Callable[..., str]) -> None:
    result = run(chat_server(), "complete", "mock/lorem?tokens=5")
    assert result["ok"], result["error"]
    assert result["text"] == "Lorem ipsum dolor sit amet," and result["finishReasons"] == ["stop"]
    assert result["usage"]["completion_tokens"] == 5


def test_a_mid_stream_failure_throws_in_the_iterator(chat_server: Callable[..., str]) -> None:
    result = run(chat_server(), "stream", "mock/fail-after-3?text=alpha beta gamma delta")
    assert not result["ok"]
    assert result["text"] == "alpha beta gamma " and result["finishReasons"] == []
    assert result["error"]["name"] == "APIError"
    assert result["error"]["message"] == "The mock provider failed mid-stream."


@pytest.mark.parametrize(("model", "name", "status"), [
    ("mock/fail-429", "RateLimitError", 429),
    ("gpt-9-ultra", "NotFoundError", 404),
    ("mock/fail-400", "BadRequestError", 400),
    ("mock/fail-500", "InternalServerError", 503),
])
def test_errors_map_to_the_client_error_classes(chat_server: Callable[..., str], model: str, name: str,
                                                status: int) -> None:
    result = run(chat_server(), "complete", model)
    assert not result["ok"]
    assert result["error"]["name"] == name and result["error"]["status"] == status


def test_a_tool_call_round_trip(chat_server: Callable[..., str]) -> None:
    model = "mock/tool-call?name=get_weather&input=%7B%22city%22%3A%22Paris%22%7D"
    result = run(chat_server(), "tools", model, "Weather in Paris?", tool_output='{"sky":"clear"}')
    assert result["ok"], result["error"]
    [call] = result["toolCalls"]
    assert call["type"] == "function" and call["id"]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert result["chunks"] > 3  # role, the call's head, its argument fragments, the finish
    assert result["finishReasons"] == ["tool_calls", "stop"]
    assert result["text"] == 'Tool get_weather returned: "{\\"sky\\":\\"clear\\"}"'


def test_models_list(chat_server: Callable[..., str]) -> None:
    result = run(chat_server(), "models")
    assert result["ok"], result["error"]
    assert {"fast", "default", "mock/echo", "mock-fast"} <= set(result["text"].split(","))
