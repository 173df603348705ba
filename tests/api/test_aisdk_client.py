"""Protocol conformance judged by the AI SDK's own client (ai 7.0.173, pinned in tests/aisdk).

`tests/aisdk/consume.mjs` runs `AbstractChat` + `DefaultChatTransport` (what `useChat` runs)
under Node against the app on a real socket; these tests check what the SDK assembled.
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

HARNESS = Path(__file__).resolve().parents[1] / "aisdk"
NODE = shutil.which("node")
SUBPROCESS_TIMEOUT_S = 120  # generous: Node start-up on a loaded CI machine

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node is not installed (needed to run the AI SDK client)"),
    pytest.mark.skipif(not (HARNESS / "node_modules" / "ai").is_dir(),
                       reason="tests/aisdk/node_modules is missing: run `npm ci --prefix tests/aisdk` (make setup)"),
]


def consume(url: str, model: str, *texts: str, resume: bool = False) -> dict[str, Any]:
    """Run the SDK client: send each text in turn in one chat (then resume, if asked); return its state."""
    args = [NODE or "node", str(HARNESS / "consume.mjs"), "--api", f"{url}/api/chat", "--model", model,
            "--timeout-ms", str((SUBPROCESS_TIMEOUT_S - 10) * 1000), "--resume", "1" if resume else "0"]
    for text in texts:
        args += ["--text", text]
    done = subprocess.run(args, cwd=HARNESS, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, f"consume.mjs failed ({done.returncode}): {done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def assistant_text(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


def test_sdk_assembles_the_exact_answer_with_metadata(chat_server: Callable[..., str]) -> None:
    url = chat_server(mock_pace_ms=1.0)  # a pause between tokens: separate network writes
    first, second = "Say hello", 'Quotes " and \\ back\nslash, ünïcödé 🎉'
    result = consume(url, "mock/echo", first, second)

    assert result["status"] == "ready" and result["error"] is None
    roles = [m["role"] for m in result["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    for message, asked in ((result["messages"][1], first), (result["messages"][3], second)):
        expected = f"You said: {asked}"
        assert assistant_text(message) == expected
        assert [p["type"] for p in message["parts"]] == ["step-start", "text"]
        assert message["parts"][1]["state"] == "done"
        assert message["id"].startswith("msg_")  # the server's `start.messageId` was adopted
        metadata = message["metadata"]
        assert metadata["model"] == "mock/echo"
        assert metadata["usage"]["outputTokens"] == len(tokenize(expected))
        assert metadata["usage"]["inputTokens"] >= 1
    assert result["finishes"] == [{"finishReason": "stop", "isError": False, "isAbort": False,
                                   "isDisconnect": False}] * 2
    # The second request carried the whole conversation as the SDK builds it, and was accepted.
    second_request = result["requests"][1]
    assert second_request["model"] == "mock/echo" and second_request["trigger"] == "submit-message"
    assert [m["role"] for m in second_request["messages"]] == ["user", "assistant", "user"]


def test_sdk_assembles_reasoning_then_text(chat_server: Callable[..., str]) -> None:
    url = chat_server()
    result = consume(url, "mock/reason?text=The answer is 42.", "Why?")
    assert result["status"] == "ready", result["error"]
    message = result["messages"][-1]
    assert [p["type"] for p in message["parts"]] == ["step-start", "reasoning", "text"]
    reasoning, text = message["parts"][1], message["parts"][2]
    assert reasoning["text"] == "Thinking about the question step by step." and reasoning["state"] == "done"
    assert text["text"] == "The answer is 42." and text["state"] == "done"


def test_sdk_reports_a_mid_stream_error_and_keeps_the_partial_text(chat_server: Callable[..., str]) -> None:
    url = chat_server()
    result = consume(url, "mock/fail-after-3?text=alpha beta gamma delta", "go")
    assert result["status"] == "error"
    assert result["error"]["message"] == "The mock provider failed mid-stream."  # the errorText, verbatim
    message = result["messages"][-1]
    assert message["role"] == "assistant"
    assert assistant_text(message) == "alpha beta gamma "
    assert message["parts"][-1]["state"] == "streaming"  # never marked complete
    assert message["metadata"]["model"] == "mock/fail-after-3?text=alpha beta gamma delta"
    assert result["finishes"][0]["isError"] is True


def test_sdk_reports_an_http_error_before_streaming(chat_server: Callable[..., str]) -> None:
    url = chat_server()
    result = consume(url, "mock/fail-429", "hi")
    assert result["status"] == "error"
    assert result["error"]["name"] == "AI_APICallError"
    body = json.loads(result["error"]["message"])  # the SDK surfaces the response body as the message
    assert body["error"]["code"] == "provider_rate_limited"
    assert [m["role"] for m in result["messages"]] == ["user"]  # no empty assistant message


def test_sdk_resume_on_mount_finds_nothing_to_resume_without_an_error(chat_server: Callable[..., str]) -> None:
    url = chat_server()
    result = consume(url, "mock/echo", "hello", resume=True)
    assert result["status"] == "ready" and result["error"] is None
    assert result["resumed"] == {"status": "ready", "error": None, "messages": 2}  # the answer is kept
