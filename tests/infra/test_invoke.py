"""`python -m devtools.invoke FN EVENT` runs each function's handler in-process on the events/ files."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.emulator import Emulator
from devtools.function_modules import entry_path

from .conftest import PYTHON, REPO_ROOT, SHARED, local_tool_env

EVENTS = REPO_ROOT / "events"


def run_invoke(function: str, event: str, *, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m devtools.invoke`: with its own embedded emulator, or on `endpoint` (the suite's emulator,
    a fresh table: no emulator process to start for each run)."""
    env = local_tool_env()
    if endpoint is not None:
        del env["LOCAL_DYNAMODB"]
        env.update(DYNAMODB_ENDPOINT_URL=endpoint, TABLE_NAME=f"invoke-{uuid.uuid4().hex[:8]}")
    return subprocess.run([PYTHON, "-m", "devtools.invoke", function, event], cwd=REPO_ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def chat_run() -> subprocess.CompletedProcess[str]:
    """One run of the chat event on the default path (its own embedded emulator), shared by the tests
    that read its output."""
    return run_invoke("chat", "events/chat-function-url.json")


@pytest.fixture(scope="session")
def endpoint(aws_emulator: Emulator) -> str:
    return aws_emulator.endpoint


@pytest.fixture(scope="module")
def health_schedule_run(endpoint: str) -> subprocess.CompletedProcess[str]:
    return run_invoke("health", "events/health-schedule.json", endpoint=endpoint)


def split_http(stdout: str) -> tuple[int, dict[str, str], str]:
    head, _, body = stdout.partition("\n\n")
    status_line, *header_lines = head.splitlines()
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.removeprefix("HTTP ")), headers, body


def emf_metrics(stderr: str) -> dict[str, tuple[str, dict[str, str]]]:
    """metric name -> (namespace, dimensions) from the EMF records a handler printed."""
    metrics: dict[str, tuple[str, dict[str, str]]] = {}
    for line in stderr.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        record = json.loads(line)
        for directive in record["_aws"]["CloudWatchMetrics"]:
            (dimension_names,) = directive["Dimensions"]
            for metric in directive["Metrics"]:
                metrics[metric["Name"]] = (directive["Namespace"], {d: record[d] for d in dimension_names})
    return metrics


def alarm_metrics(template: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    """metric name -> (namespace, dimensions) every alarm of the template watches."""
    watched = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        properties = resource["Properties"]
        metrics = [m["MetricStat"]["Metric"] for m in properties.get("Metrics", []) if "MetricStat" in m]
        if "MetricName" in properties:
            metrics.append(properties)
        for metric in metrics:
            watched[metric["MetricName"]] = (metric["Namespace"],
                                             {d["Name"]: d["Value"] for d in metric["Dimensions"]})
    return watched


@pytest.mark.parametrize("function", ["chat", "health", "summarize"])
def test_every_function_has_its_entry_file(function: str) -> None:
    """A deleted or moved entry module fails here (and in the runs below), never turns into a skip."""
    assert entry_path(function).is_file(), f"{entry_path(function)} is missing"


def test_chat_event_returns_a_ui_message_stream(chat_run: subprocess.CompletedProcess[str],
                                                sse_data: Callable[[bytes], list[str]]) -> None:
    result = chat_run
    assert result.returncode == 0, result.stderr
    assert "DynamoDB: embedded moto at http://127.0.0.1:" in result.stderr
    status, headers, body = split_http(result.stdout)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-vercel-ai-ui-message-stream"] == "v1"
    events = sse_data(body.removesuffix("\n").encode())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert [chunks[0]["type"], chunks[-1]["type"]] == ["start", "finish"]
    text = "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta")
    assert "Say hello" in text  # mock/echo repeats the user's message


def test_alarms_watch_the_metrics_the_handlers_emit(template: dict[str, Any],
                                                    chat_run: subprocess.CompletedProcess[str],
                                                    health_schedule_run: subprocess.CompletedProcess[str]) -> None:
    """An alarm matches a metric only on the exact namespace, name and dimension set."""
    emitted = emf_metrics(chat_run.stderr) | emf_metrics(health_schedule_run.stderr)
    watched = alarm_metrics(template)
    assert {"ChatErrors", "ChatRequests", "ProvidersDown"} <= set(watched)
    for name, identity in watched.items():
        assert emitted.get(name) == identity, f"{name}: alarm watches {identity}, handler emits {emitted.get(name)}"


def test_chat_sse_event_returns_plain_sse(endpoint: str, sse_data: Callable[[bytes], list[str]]) -> None:
    result = run_invoke("chat", "events/chat-sse-function-url.json", endpoint=endpoint)
    assert result.returncode == 0, result.stderr
    status, _, body = split_http(result.stdout)
    assert status == 200
    events = sse_data(body.removesuffix("\n").encode())
    assert events[-1] == "[DONE]"
    assert "Say hello" in "".join(json.loads(event)["content"] for event in events[:-1])


def test_bad_event_file_is_reported_not_raised(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = run_invoke("chat", str(broken))
    assert result.returncode == 2
    assert "cannot read event" in result.stderr and "Traceback" not in result.stderr


def test_chat_events_are_real_function_url_payloads() -> None:
    """Same envelope as the shared Function URL fixture, and the body useChat sends (plus a model)."""
    fixture = json.loads((SHARED / "fixtures/aws-events/lambdaFunctionUrlEvent.json").read_text())
    for name, path in (("chat-function-url.json", "/api/chat"), ("chat-sse-function-url.json", "/api/chat/sse"),
                       ("health-function-url.json", "/health")):
        event = json.loads((EVENTS / name).read_text())
        assert set(fixture) <= set(event), name
        assert event["version"] == "2.0" and event["rawPath"] == path
        assert event["requestContext"]["http"]["path"] == path
        assert set(fixture["requestContext"]) <= set(event["requestContext"])
    chat = json.loads(json.loads((EVENTS / "chat-function-url.json").read_text())["body"])
    assert chat["model"] == "mock/echo" and chat["trigger"] == "submit-message"
    (message,) = chat["messages"]
    assert set(message) == {"id", "role", "parts"} and message["parts"] == [{"type": "text", "text": "Say hello"}]


def test_schedule_and_summarize_events() -> None:
    schedule = json.loads((EVENTS / "health-schedule.json").read_text())
    assert schedule == json.loads((SHARED / "fixtures/aws-events/eventBridgeSchedulerEvent.json").read_text())
    assert json.loads((EVENTS / "summarize.json").read_text()) == {"user_id": "local-user",
                                                                  "conversation_id": "demo-conversation"}


def test_health_url_event(endpoint: str) -> None:
    result = run_invoke("health", "events/health-function-url.json", endpoint=endpoint)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    # 503 is the documented answer when every provider is down; anything else is a broken route.
    assert response["statusCode"] in (200, 503), response
    assert isinstance(json.loads(response["body"]), dict)
    assert "EMF" not in result.stdout and "_aws" not in result.stdout  # metrics/logs stay on stderr


def test_health_schedule_event(health_schedule_run: subprocess.CompletedProcess[str]) -> None:
    result = health_schedule_run
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)
    assert "ProvidersDown" in result.stderr  # the probe's EMF record, on stderr


def test_summarize_event_writes_the_summary_to_the_table(endpoint: str, dynamodb: Any) -> None:
    """The event of events/summarize.json on a stored conversation past the threshold: the summary of
    everything but the newest SUMMARY_KEEP_RECENT messages is written to the conversation's META item."""
    from chatcore.conversations.store import ConversationStore, StoredMessage
    from chatcore.settings import Settings

    from devtools.template_tables import create_tables

    event = json.loads((EVENTS / "summarize.json").read_text())
    user, conversation = event["user_id"], event["conversation_id"]
    table = f"chat-invoke-{uuid.uuid4().hex[:8]}"  # moto's state is per process, shared by every test
    create_tables(dynamodb, table)
    store = ConversationStore(Settings(table_name=table), client=dynamodb)
    messages = [StoredMessage(id=f"m{i}", role="user" if i % 2 == 0 else "assistant",
                              text=f"message {i}: the user's favourite colour is teal" if i == 0 else f"message {i}")
                for i in range(10)]
    stored = store.import_messages(user, conversation, messages, title="Colours")
    assert store.get_meta(user, conversation).summary is None  # type: ignore[union-attr]

    env = local_tool_env(LOCAL_DYNAMODB="", DYNAMODB_ENDPOINT_URL=endpoint, TABLE_NAME=table,
                         AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
                         SUMMARY_MODEL="mock/echo", SUMMARY_KEEP_RECENT="6", MOCK_TTFT_MS="0", MOCK_PACE_MS="0")
    result = subprocess.run([PYTHON, "-m", "devtools.invoke", "summarize", "events/summarize.json"], cwd=REPO_ROOT,
                            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "written", "covered_messages": 4, "through": stored[3].position}

    meta = store.get_meta(user, conversation)
    assert meta is not None and meta.summary_through == stored[3].position
    # mock/echo answers with the prompt it was given: the summarized messages, not the kept ones.
    assert meta.summary and "favourite colour is teal" in meta.summary and "message 3" in meta.summary
    assert "message 4" not in meta.summary
