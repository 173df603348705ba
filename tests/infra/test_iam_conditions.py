"""The scoped roles admit every DynamoDB request their function really makes, and refuse others.

The summarize and health roles are narrowed by `dynamodb:LeadingKeys` conditions (conversation
partitions for the summarizer; `HEALTH#`/`BREAKER#` items for the health function), which no
static scan can check. So each handler runs (`python -m devtools.invoke`, as `make invoke` does)
against moto through a recording proxy, and every request it sends is evaluated against the
function's statements in template.yaml: the action, the resource (table or index) and the
`ForAllValues:StringLike` partition-key patterns, as IAM would. Verified against AWS's documented
policy semantics only (no AWS account here), see docs/deploy.md.
"""

from __future__ import annotations

import fnmatch
import http.client
import json
import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from devtools.template_tables import CloudFormationTag, create_tables

from .conftest import PYTHON, REPO_ROOT, local_tool_env
from .test_template import as_list, tag

TABLE = f"chat-iam-{uuid.uuid4().hex[:8]}"  # moto's state is per process: never a table another test filled
# What devtools.invoke itself sends to prepare a local table; in AWS the stack has created it.
SETUP_OPERATIONS = {"CreateTable", "DescribeTable", "DescribeTimeToLive", "UpdateTimeToLive"}
INDEX_RESOURCE = tag("Sub", "${ChatTable.Arn}/index/*")
TABLE_RESOURCE = tag("GetAtt", "ChatTable.Arn")


@dataclass(frozen=True)
class Request:
    action: str  # e.g. "GetItem"
    on_index: bool
    partition_keys: tuple[str, ...]


def partition_keys(action: str, body: dict[str, Any]) -> list[tuple[str, bool]]:
    """(action, on_index) per item of one DynamoDB request, with each item's `pk`; batches and
    transactions are authorized per item, as DynamoDB does."""
    def pk(item: dict[str, Any]) -> str:
        return str(item["pk"]["S"])

    if action in ("GetItem", "UpdateItem", "DeleteItem"):
        return [(pk(body["Key"]), False)]
    if action == "PutItem":
        return [(pk(body["Item"]), False)]
    if action == "Query":
        names = {k: v for k, v in body.get("ExpressionAttributeNames", {}).items()}
        match = re.search(r"([#\w]+)\s*=\s*(:\w+)", body["KeyConditionExpression"])
        assert match, body["KeyConditionExpression"]
        return [(str(body["ExpressionAttributeValues"][match.group(2)]["S"]), "IndexName" in body)] \
            if names.get(match.group(1), match.group(1)) == "pk" else [("<not pk>", "IndexName" in body)]
    if action == "BatchGetItem":
        return [(pk(key), False) for request in body["RequestItems"].values() for key in request["Keys"]]
    if action == "BatchWriteItem":
        return [(pk(w["PutRequest"]["Item"] if "PutRequest" in w else w["DeleteRequest"]["Key"]), False)
                for writes in body["RequestItems"].values() for w in writes]
    raise AssertionError(f"no key extraction for {action}: extend this test before granting it")


def requests_of(action: str, body: dict[str, Any]) -> list[Request]:
    if action == "TransactWriteItems":
        out = []
        for item in body["TransactItems"]:
            ((kind, spec),) = item.items()
            inner = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                     "ConditionCheck": "ConditionCheckItem"}[kind]
            key = spec["Item"] if kind == "Put" else spec["Key"]
            out.append(Request(inner, False, (str(key["pk"]["S"]),)))
        return [Request(action, False, tuple(r.partition_keys[0] for r in out)), *out]
    keys = partition_keys(action, body)
    on_index = any(index for _, index in keys)
    return [Request(action, on_index, tuple(key for key, _ in keys))]


class RecordingProxy:
    """Forwards DynamoDB's JSON protocol to moto and records (operation, body) of each request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                target = self.headers.get("x-amz-target", "")
                if target.startswith("DynamoDB_"):
                    proxy.calls.append((target.split(".", 1)[1], json.loads(body or b"{}")))
                connection = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection.request("POST", self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def requests(self) -> list[Request]:
        return [r for action, body in self.calls if action not in SETUP_OPERATIONS for r in requests_of(action, body)]


@pytest.fixture
def default_account_client(aws_emulator: Any) -> Any:
    """A client in the emulator's default account: the one the invoked handlers use (uniquely named table)."""
    from tests import moto_dynamodb

    return moto_dynamodb.client()


@pytest.fixture
def proxy(aws_emulator: Any, default_account_client: Any) -> Iterator[RecordingProxy]:
    create_tables(default_account_client, TABLE)
    recorder = RecordingProxy(aws_emulator.endpoint)
    recorder.thread.start()
    try:
        yield recorder
    finally:
        recorder.server.shutdown()
        recorder.server.server_close()


def dynamodb_statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    """The function's inline Allow statements that grant DynamoDB actions (both branches of an If)."""
    statements = []
    for policy in template["Resources"][function]["Properties"]["Policies"]:
        if not isinstance(policy, dict):
            continue
        for statement in policy["Statement"]:
            candidates = statement.value[1:] if isinstance(statement, CloudFormationTag) else [statement]
            statements += [s for s in candidates if isinstance(s, dict)
                           and any(str(a).startswith("dynamodb:") for a in as_list(s["Action"]))]
    return statements


def allowed(statements: list[dict[str, Any]], request: Request) -> bool:
    """Whether any statement allows the request, evaluating Action, Resource and LeadingKeys like IAM."""
    for statement in statements:
        assert statement["Effect"] == "Allow"
        if f"dynamodb:{request.action}" not in as_list(statement["Action"]):
            continue
        if (INDEX_RESOURCE if request.on_index else TABLE_RESOURCE) not in as_list(statement["Resource"]):
            continue
        condition = statement.get("Condition")
        if condition is None:
            return True
        assert set(condition) == {"ForAllValues:StringLike"}, condition
        (patterns,) = [as_list(v) for k, v in condition["ForAllValues:StringLike"].items()
                       if k == "dynamodb:LeadingKeys"]
        if all(any(fnmatch.fnmatchcase(key, p) for p in patterns) for key in request.partition_keys):
            return True
    return False


def run_invoke(proxy: RecordingProxy, function: str, event: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = local_tool_env(LOCAL_DYNAMODB="", DYNAMODB_ENDPOINT_URL=proxy.url, TABLE_NAME=TABLE,
                                 AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
                                 MOCK_TTFT_MS="0", MOCK_PACE_MS="0", **env)
    result = subprocess.run([PYTHON, "-m", "devtools.invoke", function, event], cwd=REPO_ROOT, env=environment,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_the_evaluator_refuses_what_the_scoped_roles_must_not_do(template: dict[str, Any]) -> None:
    """The checks below can fail: writes outside the summary update, other partitions, the index."""
    summarize = dynamodb_statements(template, "SummarizeFunction")
    health = dynamodb_statements(template, "HealthFunction")
    conversation = "USER#alice#CONV#c1"
    assert allowed(summarize, Request("UpdateItem", False, (conversation,)))
    for refused in (Request("PutItem", False, (conversation,)), Request("DeleteItem", False, (conversation,)),
                    Request("BatchWriteItem", False, (conversation,)),
                    Request("TransactWriteItems", False, (conversation,)),
                    Request("GetItem", False, ("APIKEY#0123",)), Request("UpdateItem", False, ("USER#alice#LIMITS",)),
                    Request("Query", True, ("USER#alice#CONVS",))):
        assert not allowed(summarize, refused), refused
    assert allowed(health, Request("BatchGetItem", False, ("HEALTH#a", "BREAKER#a")))
    for refused in (Request("BatchWriteItem", False, ("HEALTH#a", "USER#x#CONV#y")),
                    Request("UpdateItem", False, ("HEALTH#a",)), Request("GetItem", False, ("APIKEY#0123",)),
                    Request("BatchGetItem", False, (conversation,)), Request("PutItem", False, ("HEALTH#a",)),
                    Request("PutItem", False, (conversation,))):
        assert not allowed(health, refused), refused
    assert allowed(health, Request("PutItem", False, ("BREAKER#a",)))  # a breaker transition
    assert allowed(summarize, Request("PutItem", False, ("BREAKER#a",)))  # summaries go through the router


def test_summarize_role_admits_the_summarizers_requests(template: dict[str, Any], proxy: RecordingProxy,
                                                        default_account_client: Any) -> None:
    from chatcore.conversations.store import ConversationStore, StoredMessage
    from chatcore.settings import Settings

    event = json.loads((REPO_ROOT / "events/summarize.json").read_text())
    store = ConversationStore(Settings(table_name=TABLE), client=default_account_client)
    store.import_messages(event["user_id"], event["conversation_id"],
                          [StoredMessage(id=f"m{i}", role="user" if i % 2 == 0 else "assistant", text=f"message {i}")
                           for i in range(10)])
    result = run_invoke(proxy, "summarize", "events/summarize.json", SUMMARY_MODEL="mock/echo")
    assert json.loads(result.stdout)["status"] == "written"
    requests = proxy.requests()
    assert {r.action for r in requests} == {"GetItem", "Query", "UpdateItem"}
    statements = dynamodb_statements(template, "SummarizeFunction")
    refused = [r for r in requests if not allowed(statements, r)]
    assert not refused, f"the summarize role would refuse {refused}"


def test_health_role_admits_the_probes_and_the_report(template: dict[str, Any], proxy: RecordingProxy) -> None:
    # A provider that refuses connections: its probe fails, so the probe opens its circuit (PutItem).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        down = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        env = {"OPENAI_API_KEY": "sk-test-not-real", "OPENAI_BASE_URL": down, "HEALTH_PROBE_TIMEOUT_S": "5",
               "BREAKER_STORE": "dynamodb", "HEALTH_PROBE_TOKEN": "local-probe-token"}
        scheduled = run_invoke(proxy, "health", "events/health-schedule.json", **env)
        assert "openai" in json.loads(scheduled.stdout)["providersDown"]
        run_invoke(proxy, "health", "events/health-function-url.json", **env)
    requests = proxy.requests()
    assert {"BatchWriteItem", "BatchGetItem", "PutItem"} <= {r.action for r in requests}
    statements = dynamodb_statements(template, "HealthFunction")
    refused = [r for r in requests if not allowed(statements, r)]
    assert not refused, f"the health role would refuse {refused}"
