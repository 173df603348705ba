"""Tool turns judged by the AI SDK's own client (ai 7.0.173, `tests/aisdk/tools.mjs`): `onToolCall` +
`addToolOutput` with `sendAutomaticallyWhen`, `addToolApprovalResponse`, server tools over HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import ToolEndpoint, http_tool, tool_model

HARNESS = Path(__file__).resolve().parents[1] / "aisdk"
NODE = shutil.which("node")
SUBPROCESS_TIMEOUT_S = 120  # generous: Node start-up on a loaded CI machine

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node is not installed (needed to run the AI SDK client)"),
    pytest.mark.skipif(not (HARNESS / "node_modules" / "ai").is_dir(),
                       reason="tests/aisdk/node_modules is missing: run `npm ci --prefix tests/aisdk` (make setup)"),
]


def run_chat(url: str, body: dict[str, Any], *, client_output: Any = None, approve: bool | None = None
             ) -> dict[str, Any]:
    args = [NODE or "node", str(HARNESS / "tools.mjs"), "--api", f"{url}/api/chat", "--text", "Go",
            "--body", json.dumps(body), "--timeout-ms", str((SUBPROCESS_TIMEOUT_S - 10) * 1000)]
    if client_output is not None:
        args += ["--client-output", json.dumps(client_output)]
    if approve is not None:
        args += ["--approve", "yes" if approve else "no"]
    done = subprocess.run(args, cwd=HARNESS, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, f"tools.mjs failed ({done.returncode}): {done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["error"] is None, result["error"]
    return result


def tool_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in message["parts"] if p["type"].startswith("tool-")]


def text_of(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


def test_a_client_tool_round_trip_is_one_assistant_message(chat_server: Callable[..., str]) -> None:
    url = chat_server()
    body = {"model": tool_model("locate", {"precise": True}),
            "tools": {"locate": {"description": "Where the user is.", "inputSchema": {"type": "object"}}}}
    result = run_chat(url, body, client_output={"city": "Lyon"})
    assert len(result["requests"]) == 2  # the SDK sent the tool's output by itself (sendAutomaticallyWhen)
    assert [m["role"] for m in result["messages"]] == ["user", "assistant"]
    assistant = result["messages"][1]
    [part] = tool_parts(assistant)
    assert part["type"] == "tool-locate" and part["state"] == "output-available"
    assert part["input"] == {"precise": True} and part["output"] == {"city": "Lyon"}
    assert text_of(assistant) == 'Tool locate returned: {"city":"Lyon"}'
    assert [f["finishReason"] for f in result["finishes"]] == ["tool-calls", "stop"]
    assert {f["messageId"] for f in result["finishes"]} == {assistant["id"]}


def test_a_multi_step_turn_with_an_http_tool(chat_server: Callable[..., str],
                                             tool_endpoint: tuple[str, ToolEndpoint]) -> None:
    base, endpoint = tool_endpoint
    url = chat_server(tools_json=json.dumps({"lookup": http_tool(f"{base}/ok")}))
    result = run_chat(url, {"model": tool_model("lookup", {"city": "Paris"})})
    assert len(result["requests"]) == 1 and len(endpoint.calls) == 1
    assistant = result["messages"][1]
    assert [p["type"] for p in assistant["parts"]] == ["step-start", "tool-lookup", "step-start", "text"]
    assert tool_parts(assistant)[0]["output"] == {"echo": {"city": "Paris"}, "tool": "lookup"}
    assert text_of(assistant).startswith("Tool lookup returned:")


@pytest.mark.parametrize("approved", [True, False])
def test_approval_through_add_tool_approval_response(chat_server: Callable[..., str],
                                                     tool_endpoint: tuple[str, ToolEndpoint],
                                                     approved: bool) -> None:
    base, endpoint = tool_endpoint
    url = chat_server(tools_json=json.dumps({"lookup": http_tool(f"{base}/ok", needsApproval=True)}))
    result = run_chat(url, {"model": tool_model("lookup", {"city": "Paris"})}, approve=approved)
    assert len(result["requests"]) == 2
    sent = result["requests"][1]["messages"][-1]
    assert tool_parts(sent)[0]["state"] == "approval-responded"
    assert tool_parts(sent)[0]["approval"]["approved"] is approved
    assert [m["role"] for m in result["messages"]] == ["user", "assistant"]
    [part] = tool_parts(result["messages"][1])
    if approved:
        assert part["state"] == "output-available" and len(endpoint.calls) == 1
        assert text_of(result["messages"][1]).startswith("Tool lookup returned:")
    else:
        assert part["state"] == "output-denied"
        assert endpoint.calls == []  # a denied tool is never called
