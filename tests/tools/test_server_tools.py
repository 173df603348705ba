"""Server tools over HTTP and MCP, several steps in one turn, approvals, client tools, the SSE and
UI message stream encodings, and stored history: through the app on a real socket, the mock model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from .conftest import ToolEndpoint, http_tool, tool_model, ui_chunks


def post(url: str, model: str, *, path: str = "/api/chat", messages: list[dict[str, Any]] | None = None,
         **body: Any) -> httpx.Response:
    payload = {"messages": messages or [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Go"}]}],
               "model": model, **body}
    response = httpx.post(f"{url}{path}", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    return response


def types(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["type"] for c in chunks if c["type"] not in ("text-delta", "tool-input-delta")]


def text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["delta"] for c in chunks if c["type"] == "text-delta")


def test_an_http_tool_runs_between_two_steps_of_one_turn(chat_server: Callable[..., str],
                                                         tool_endpoint: tuple[str, ToolEndpoint]) -> None:
    base, endpoint = tool_endpoint
    url = chat_server(tools_json=json.dumps({"lookup": http_tool(f"{base}/ok")}))
    chunks = ui_chunks(post(url, tool_model("lookup", {"city": "Paris"})).text)
    assert types(chunks) == ["start", "start-step", "tool-input-start", "tool-input-available",
                             "tool-output-available", "finish-step", "start-step", "text-start", "text-end",
                             "finish-step", "finish"]
    call_id = next(c["toolCallId"] for c in chunks if c["type"] == "tool-input-start")
    assert endpoint.calls == [{"toolName": "lookup", "toolCallId": call_id, "input": {"city": "Paris"}}]
    output = next(c for c in chunks if c["type"] == "tool-output-available")
    assert output == {"type": "tool-output-available", "toolCallId": call_id,
                      "output": {"echo": {"city": "Paris"}, "tool": "lookup"}}
    assert text(chunks) == 'Tool lookup returned: {"echo":{"city":"Paris"},"tool":"lookup"}'
    finish = chunks[-1]
    assert finish["finishReason"] == "stop"
    assert finish["messageMetadata"]["steps"] == 2
    usage = finish["messageMetadata"]["usage"]
    assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0


@pytest.mark.parametrize(("kind", "expected"), [
    ("fail", "The tool lookup failed (HTTP 500)."),
    ("slow", "The tool lookup did not answer within 0.3 s."),
])
def test_a_failing_http_tool_is_a_tool_output_error_and_the_model_continues(
        chat_server: Callable[..., str], tool_endpoint: tuple[str, ToolEndpoint], kind: str, expected: str) -> None:
    base, _ = tool_endpoint
    url = chat_server(tools_json=json.dumps({"lookup": http_tool(f"{base}/{kind}", execute={"timeoutS": 0.3})}))
    chunks = ui_chunks(post(url, tool_model("lookup", {"city": "Paris"})).text)
    error = next(c for c in chunks if c["type"] == "tool-output-error")
    assert error["errorText"] == expected
    assert "secret" not in json.dumps(chunks) and base not in json.dumps(chunks)
    assert text(chunks) == f"Tool lookup returned: {json.dumps(expected)}"
    assert chunks[-1]["finishReason"] == "stop"


def test_input_that_fails_the_schema_is_a_tool_input_error_the_model_sees(
        chat_server: Callable[..., str], tool_endpoint: tuple[str, ToolEndpoint]) -> None:
    base, endpoint = tool_endpoint
    url = chat_server(tools_json=json.dumps({"lookup": http_tool(f"{base}/ok")}))
    chunks = ui_chunks(post(url, tool_model("lookup", {"city": 42})).text)
    error = next(c for c in chunks if c["type"] == "tool-input-error")
    assert error["toolName"] == "lookup" and error["input"] == {"city": 42}
    assert "42 is not of type 'string'" in error["errorText"]
    assert endpoint.calls == []  # never run
    assert "is not of type" in text(chunks)  # the model saw the error as the call's result


def test_the_step_limit_ends_the_turn(chat_server: Callable[..., str],
                                      tool_endpoint: tuple[str, ToolEndpoint]) -> None:
    base, endpoint = tool_endpoint
    url = chat_server(tools_json=json.dumps({"lookup": http_tool(f"{base}/ok")}), max_tool_steps=1)
    chunks = ui_chunks(post(url, tool_model("lookup", {"city": "Paris"})).text)
    assert types(chunks)[-3:] == ["tool-output-available", "finish-step", "finish"]
    assert chunks[-1]["finishReason"] == "tool-calls"
    assert len(endpoint.calls) == 1


def test_a_client_tool_ends_the_turn_and_its_output_continues_the_same_message(
        chat_server: Callable[..., str]) -> None:
    url = chat_server()
    tools = {"locate": {"description": "Where the user is.", "inputSchema": {"type": "object"}}}
    model = tool_model("locate", {})
    chunks = ui_chunks(post(url, model, tools=tools).text)
    assert chunks[-1]["finishReason"] == "tool-calls"
    start = chunks[0]
    call = next(c for c in chunks if c["type"] == "tool-input-available")
    assistant = {"id": start["messageId"], "role": "assistant", "parts": [
        {"type": "step-start"},
        {"type": "tool-locate", "toolCallId": call["toolCallId"], "state": "output-available", "input": {},
         "output": {"city": "Lyon"}}]}
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Go"}]}
    again = ui_chunks(post(url, model, tools=tools, messages=[user, assistant], messageId=start["messageId"]).text)
    assert again[0]["messageId"] == start["messageId"]  # one assistant message per turn
    assert text(again) == 'Tool locate returned: {"city":"Lyon"}'


def test_approval_granted_runs_the_tool_and_denied_never_does(
        chat_server: Callable[..., str], tool_endpoint: tuple[str, ToolEndpoint]) -> None:
    base, endpoint = tool_endpoint
    url = chat_server(tools_json=json.dumps({"lookup": http_tool(f"{base}/ok", needsApproval=True)}))
    model = tool_model("lookup", {"city": "Paris"})
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Go"}]}
    for approved in (False, True):
        chunks = ui_chunks(post(url, model).text)
        request = next(c for c in chunks if c["type"] == "tool-approval-request")
        assert chunks[-1]["finishReason"] == "tool-calls" and endpoint.calls == []  # waits for the answer
        call = next(c for c in chunks if c["type"] == "tool-input-available")
        assistant = {"id": chunks[0]["messageId"], "role": "assistant", "parts": [
            {"type": "step-start"},
            {"type": "tool-lookup", "toolCallId": call["toolCallId"], "state": "approval-responded",
             "input": {"city": "Paris"}, "approval": {"id": request["approvalId"], "approved": approved}}]}
        again = ui_chunks(post(url, model, messages=[user, assistant]).text)
        assert again[0]["messageId"] == chunks[0]["messageId"]
        if approved:
            assert [c["type"] for c in again[:2]] == ["start", "tool-output-available"]
            assert len(endpoint.calls) == 1
            assert text(again).startswith('Tool lookup returned: {"echo"')
        else:
            assert [c["type"] for c in again[:2]] == ["start", "tool-output-denied"]
            assert endpoint.calls == []
            assert "denied" in text(again)


def test_plain_sse_carries_tool_events_and_the_text(chat_server: Callable[..., str],
                                                     tool_endpoint: tuple[str, ToolEndpoint]) -> None:
    base, _ = tool_endpoint
    url = chat_server(tools_json=json.dumps({"lookup": http_tool(f"{base}/ok")}))
    response = post(url, tool_model("lookup", {"city": "Paris"}), path="/api/chat/sse")
    events = [json.loads(line[len("data: "):]) for line in response.text.split("\n\n") if line.startswith("data: {")]
    tools = [e["tool"] for e in events if "tool" in e]
    assert [t["type"] for t in tools] == ["input-available", "output-available"]
    assert tools[1]["output"] == {"echo": {"city": "Paris"}, "tool": "lookup"}
    assert "".join(e.get("content", "") for e in events).startswith("Tool lookup returned:")


def test_a_deployment_that_cannot_call_tools_is_skipped(chat_server: Callable[..., str]) -> None:
    registry = {"deployments": {
        "no-tools": {"provider": "mock", "model": "echo", "tools": False, "prices": {"input": 0, "output": 0}},
        "with-tools": {"provider": "mock", "model": "lorem", "prices": {"input": 0, "output": 0}}},
        "aliases": {"chain": ["no-tools", "with-tools"], "only-no-tools": ["no-tools"]}}
    url = chat_server(model_registry_json=json.dumps(registry))
    tools = {"locate": {"inputSchema": {"type": "object"}}}
    assert httpx.post(f"{url}/api/chat", json={"messages": [{"role": "user", "content": "hi"}], "model": "chain",
                                               "tools": tools}, timeout=30).headers["x-chat-deployment"] == "with-tools"
    assert httpx.post(f"{url}/api/chat", json={"messages": [{"role": "user", "content": "hi"}], "model": "chain"},
                      timeout=30).headers["x-chat-deployment"] == "no-tools"
    refused = httpx.post(f"{url}/api/chat", json={"messages": [{"role": "user", "content": "hi"}],
                                                  "model": "only-no-tools", "tools": tools}, timeout=30)
    assert refused.status_code == 400 and "cannot call tools" in refused.text


def test_a_bad_tools_document_fails_the_cold_start() -> None:
    from chatcore.service.tools import parse_tools

    with pytest.raises(ValueError, match="needs an inputSchema"):
        parse_tools({"x": {"execute": {"type": "http", "url": "http://127.0.0.1/x"}}}, "TOOLS_JSON")
    with pytest.raises(ValueError, match="execute"):
        parse_tools({"x": {"inputSchema": {}, "execute": {"type": "ftp", "url": "ftp://x"}}}, "TOOLS_JSON")


@pytest.fixture
def aws_secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """SSM and Secrets Manager in moto, with the secret caches cleared around the test."""
    import boto3  # noqa: F401  (moto patches its clients)
    from aws_lambda_powertools.utilities import parameters
    from chatcore import secrets
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    secrets.clear_cache()
    parameters.clear_caches()
    with mock_aws():
        yield
    secrets.clear_cache()
    parameters.clear_caches()


def test_a_header_secret_under_the_stacks_prefix_is_fetched_and_sent(
        chat_server: Callable[..., str], tool_endpoint: tuple[str, ToolEndpoint], aws_secrets: None) -> None:
    import boto3

    base, endpoint = tool_endpoint
    boto3.client("ssm").put_parameter(Name="/chat-test/tools/orders-token", Value="tok-ssm", Type="SecureString")
    boto3.client("secretsmanager").create_secret(Name="chat-test/tools/orders-key", SecretString='{"api_key": "k-sm"}')
    headers = {"authorization": {"secret": "ssm:/chat-test/tools/orders-token", "prefix": "Bearer "},
               "x-api-key": {"secret": "chat-test/tools/orders-key"}}
    url = chat_server(tools_json=json.dumps({"lookup": http_tool(f"{base}/ok", execute={"headers": headers})}),
                      tool_secret_prefix="chat-test/tools/")
    chunks = ui_chunks(post(url, tool_model("lookup", {"city": "Oslo"})).text)
    assert [c["type"] for c in chunks].count("tool-output-available") == 1
    assert endpoint.headers[0]["authorization"] == "Bearer tok-ssm" and endpoint.headers[0]["x-api-key"] == "k-sm"
    assert "tok-ssm" not in json.dumps(chunks) and "k-sm" not in json.dumps(chunks)


def test_a_header_secret_outside_the_stacks_prefix_fails_the_cold_start() -> None:
    """The chat role may read only `<stack>/tools/...`: another name would fail every call with AccessDenied."""
    from chatcore.service.tools import load_tools

    from tests.conftest import settings_for_tests

    for name in ("ssm:/chat/orders-token", "chat-test/openai-key", "ssm:/chat-prod/tools/orders-token"):
        tools = {"lookup": http_tool("http://127.0.0.1/ok", execute={"headers": {"authorization": {"secret": name}}})}
        with pytest.raises(ValueError, match=r"'authorization': secret .* must be named chat-test/tools/<name>"):
            load_tools(settings_for_tests(tools_json=json.dumps(tools), tool_secret_prefix="chat-test/tools/"))
        assert load_tools(settings_for_tests(tools_json=json.dumps(tools)))  # no prefix (local): any name


def test_an_mcp_tool_is_listed_on_first_use_and_called(chat_server: Callable[..., str],
                                                       serve_asgi: Callable[..., str]) -> None:
    from mcp.server.fastmcp import FastMCP

    server = FastMCP("weather", stateless_http=True)
    calls: list[str] = []

    @server.tool()
    def forecast(city: str) -> dict[str, Any]:
        """The weather forecast for a city."""
        calls.append(city)
        return {"city": city, "sky": "clear"}

    mcp_url = serve_asgi(server.streamable_http_app(), lifespan="on") + "/mcp"  # the session manager runs in its lifespan
    url = chat_server(tools_json=json.dumps({"forecast": {"execute": {"type": "mcp", "url": mcp_url}}}))
    chunks = ui_chunks(post(url, tool_model("forecast", {"city": "Oslo"})).text)
    assert calls == ["Oslo"]
    output = next(c for c in chunks if c["type"] == "tool-output-available")
    assert output["output"] == {"city": "Oslo", "sky": "clear"}
    assert text(chunks) == 'Tool forecast returned: {"city":"Oslo","sky":"clear"}'
    bad = ui_chunks(post(url, tool_model("forecast", {"town": "Oslo"})).text)  # the listed schema applies
    assert "'city' is a required property" in next(c for c in bad if c["type"] == "tool-input-error")["errorText"]


def test_each_later_step_is_reserved_against_the_token_budget(chat_server: Callable[..., str], table: Any,
                                                              tool_endpoint: tuple[str, ToolEndpoint]) -> None:
    """The first step fits the budget; the turn with the step after the tool does not (what the first
    step used plus the second's prompt and output cap): an in-stream error, no model call."""
    import dataclasses

    from chatcore.api.app import default_components
    from chatcore.limits.limiter import DynamoDBLimiter
    from chatcore.limits.policy import LimitPolicy, TierLimits
    from chatcore.providers import ProviderRegistry

    from tests.conftest import settings_for_tests

    base, endpoint = tool_endpoint
    # About 350 tokens of system prompt: one step (~360 + 1,000 of output) fits 1,500, two do not.
    settings = settings_for_tests(tools_json=json.dumps({"lookup": http_tool(f"{base}/ok")}), max_output_tokens=1000,
                                  system_prompt="Answer briefly. " * 88)
    limits = TierLimits(requests_per_minute=100, tokens_per_minute=1_500, tokens_per_day=10**6, concurrent_streams=5)
    limiter = DynamoDBLimiter(table.name, LimitPolicy({"free": limits}), lambda: table.client, lease_ttl_s=60)
    components = dataclasses.replace(default_components(settings, ProviderRegistry(settings)), limiter=limiter)
    url = chat_server(components=components)
    chunks = ui_chunks(post(url, tool_model("lookup", {"city": "Paris"})).text)
    assert [c["type"] for c in chunks].count("tool-output-available") == 1 and len(endpoint.calls) == 1
    error = next(c for c in chunks if c["type"] == "error")
    assert "plan allows" in error["errorText"] or "budget" in error["errorText"]
    assert chunks[-1]["type"] == "finish" and chunks[-1]["finishReason"] == "error"
    assert text(chunks) == ""  # the second model step never ran


def test_fallback_before_the_first_event_still_works_with_tools(chat_server: Callable[..., str],
                                                                tool_endpoint: tuple[str, ToolEndpoint]) -> None:
    """The first deployment fails before answering; the next one calls the server tool and finishes."""
    base, endpoint = tool_endpoint
    call = tool_model("lookup", {"city": "Oslo"}).removeprefix("mock/")
    registry = {"deployments": {
        "overloaded": {"provider": "mock", "model": "fail-529", "prices": {"input": 0, "output": 0}},
        "caller": {"provider": "mock", "model": call, "prices": {"input": 0, "output": 0}}},
        "aliases": {"chain": ["overloaded", "caller"]}}
    url = chat_server(model_registry_json=json.dumps(registry), tools_json=json.dumps({"lookup": http_tool(f"{base}/ok")}))
    response = post(url, "chain")
    assert response.headers["x-chat-deployment"] == "caller"
    assert response.headers["x-chat-fallbacks"] == "overloaded:provider_overloaded"
    chunks = ui_chunks(response.text)
    assert [c["type"] for c in chunks].count("tool-output-available") == 1 and len(endpoint.calls) == 1
    assert text(chunks) == 'Tool lookup returned: {"echo":{"city":"Oslo"},"tool":"lookup"}'
    assert chunks[-1]["finishReason"] == "stop"
