"""template.yaml is current and closes what a reviewer flags: the Web Adapter release, a concurrency
cap, CORS exposing every browser-facing header, no secret in plain environment variables, log
retention, scoped roles, and metrics in the namespace the template configures."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from devtools.template_tables import CloudFormationTag

from .conftest import REPO_ROOT
from .test_template import FUNCTIONS, as_list, function_properties, tag, walk

LWA_ACCOUNT = "753240598075"
LWA_LAYER_VERSION = 30  # release 1.1.0 (README of aws/aws-lambda-web-adapter)
CLOUDWATCH_RETENTION_DAYS = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                             2922, 3288, 3653}
# Response headers the docs tell browser clients to read (docs/security.md, docs/routing.md, README).
DOCUMENTED_BROWSER_HEADERS = {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
                              "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "retry-after",
                              "x-chat-deployment", "x-chat-fallbacks", "x-request-id"}


def test_web_adapter_layer_is_pinned_to_release_1_1_0_in_the_stacks_region(template: dict[str, Any]) -> None:
    (adapter,) = function_properties(template, "ChatFunction")["Layers"]
    _, default_arn, _ = adapter.value
    assert default_arn == tag("Sub", "arn:${AWS::Partition}:lambda:${AWS::Region}:" + LWA_ACCOUNT
                              + f":layer:LambdaAdapterLayerArm64:{LWA_LAYER_VERSION}")
    assert f"LambdaAdapterLayerArm64:{LWA_LAYER_VERSION}" in template["Parameters"]["LambdaAdapterLayerArn"]["Description"]
    # Nothing else in the template still names an older adapter layer.
    text = (REPO_ROOT / "template.yaml").read_text()
    assert set(re.findall(r"LambdaAdapterLayer(?:Arm64|X86):(\d+)", text)) == {str(LWA_LAYER_VERSION)}


def test_chat_reserved_concurrency_is_a_parameter_applied_only_when_set(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["ChatReservedConcurrency"]
    assert parameter["Default"] == ""  # no cap unless the operator sets one (documented in docs/deploy.md)
    pattern = parameter["AllowedPattern"]
    for value, accepted in (("", True), ("1", True), ("50", True), ("1000", True), ("0", False), ("-1", False),
                            ("10 ", False), ("ten", False)):
        # 0 would throttle every request: a stopped function, never a cap.
        assert (re.fullmatch(pattern, value) is not None) is accepted, value
    chat = function_properties(template, "ChatFunction")
    setting = chat["ReservedConcurrentExecutions"]
    assert setting.tag == "If"
    condition, when_set, otherwise = setting.value
    assert when_set == tag("Ref", "ChatReservedConcurrency") and otherwise == tag("Ref", "AWS::NoValue")
    assert template["Conditions"][condition] == tag("Not", [tag("Equals", [tag("Ref", "ChatReservedConcurrency"), ""])])


async def test_function_url_exposes_every_header_the_app_sets_for_browsers(template: dict[str, Any]) -> None:
    import httpx
    from chatcore.api.app import create_app
    from chatcore.settings import Settings

    exposed = function_properties(template, "ChatFunction")["FunctionUrlConfig"]["Cors"]["ExposeHeaders"]
    assert len(exposed) == len(set(exposed)) and all(h == h.lower() for h in exposed)
    assert set(exposed) >= DOCUMENTED_BROWSER_HEADERS
    # The app's own CORS configuration (used locally) exposes the same list: one list, two places.
    app = create_app(Settings(stage="test", cors_in_app=True, cors_allow_origins=("https://app.example",)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/healthz", headers={"origin": "https://app.example"})
    in_app = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert in_app == set(exposed)
    # Every x-ratelimit-*/x-chat-* header name the layer's code writes is in the list.
    written = set()
    for path in (REPO_ROOT / "layers/common/chatcore").rglob("*.py"):
        written |= set(re.findall(r'"(x-(?:ratelimit|chat)-[a-z-]+|x-request-id|retry-after)"', path.read_text()))
    assert written and written <= set(exposed), sorted(written - set(exposed))


def test_health_probe_token_comes_from_a_secret_never_from_the_environment(template: dict[str, Any]) -> None:
    health = function_properties(template, "HealthFunction")
    variables = health["Environment"]["Variables"]
    assert "HEALTH_PROBE_TOKEN" not in variables
    assert variables["HEALTH_PROBE_TOKEN_SECRET"] == tag("Ref", "HealthProbeTokenSecretName")
    parameter = template["Parameters"]["HealthProbeTokenSecretName"]
    assert parameter["Default"] == ""
    assert parameter["AllowedPattern"] == template["Parameters"]["OpenAIApiKeySecretName"]["AllowedPattern"]
    assert "HealthProbeToken" not in template["Parameters"]
    # No NoEcho (secret) parameter flows into any function's environment.
    secret_parameters = {name for name, p in template["Parameters"].items() if p.get("NoEcho")}
    environments = [template["Globals"]["Function"]["Environment"]] + [
        function_properties(template, name).get("Environment", {}) for name in FUNCTIONS]
    for node in walk(environments):
        assert not (isinstance(node, CloudFormationTag) and node.tag == "Ref" and node.value in secret_parameters)

    # Only the health function may read it, and only when a name is configured.
    grants = {}
    for name in FUNCTIONS:
        for node in walk(function_properties(template, name)["Policies"]):
            if isinstance(node, CloudFormationTag) and node.tag == "If" and node.value[0] == "HasHealthProbeSecret":
                grants.setdefault(name, []).append(node.value[1])
                assert node.value[2] == tag("Ref", "AWS::NoValue")
    assert set(grants) == {"HealthFunction"}
    assert {s["Action"] for s in grants["HealthFunction"]} == {"secretsmanager:GetSecretValue", "ssm:GetParameter"}
    resources = json.dumps([str(s["Resource"]) for s in grants["HealthFunction"]])
    assert "HealthProbeTokenSecretName" in resources and "*" not in resources.replace("-??????", "")
    assert template["Conditions"]["HasHealthProbeSecret"] == tag(
        "Not", [tag("Equals", [tag("Ref", "HealthProbeTokenSecretName"), ""])])


# Actions a role may have only on circuit-breaker items (`BREAKER#*`): the router's shared state.
BREAKER_ONLY = {"PutItem", "GetItem", "BatchGetItem"}


@pytest.mark.parametrize("function, forbidden", [
    ("SummarizeFunction", {"DeleteItem", "BatchWriteItem", "TransactWriteItems", "ConditionCheckItem", "Scan"}),
    ("HealthFunction", {"DeleteItem", "Query", "Scan", "TransactWriteItems", "UpdateItem"}),
])
def test_scoped_roles_touch_only_their_own_items(template: dict[str, Any], function: str,
                                                 forbidden: set[str]) -> None:
    statements = [node for node in walk(function_properties(template, function)["Policies"])
                  if isinstance(node, dict) and any(str(a).startswith("dynamodb:") for a in as_list(node.get("Action")))]
    assert statements
    for statement in statements:
        actions = {a.removeprefix("dynamodb:") for a in as_list(statement["Action"])}
        if actions == {"SearchVectors"}:  # long-term memory: the vector index, scoped by the code
            assert statement["Resource"] == tag("Sub", "${ChatTable.Arn}/index/memories")
            continue
        if statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"] == ["USER#*#MEM"]:
            # The user's memory partition: extraction deletes memories a user retracted.
            assert not actions & (forbidden - {"DeleteItem", "BatchWriteItem"}), f"{function}: {sorted(actions)}"
            continue
        assert not actions & forbidden, f"{function}: {sorted(actions & forbidden)}"
        assert as_list(statement["Resource"]) == [tag("GetAtt", "ChatTable.Arn")], "table only, no index"
        (keys,) = statement["Condition"]["ForAllValues:StringLike"].values()
        assert keys and all(k.endswith("*") and "#" in k for k in keys), keys
        if actions & {"PutItem"}:
            assert actions <= BREAKER_ONLY and keys == ["BREAKER#*"], statement


def test_every_function_logs_to_its_own_group_with_retention(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["LogRetentionDays"]
    assert parameter["Default"] == 30 and set(parameter["AllowedValues"]) <= CLOUDWATCH_RETENTION_DAYS
    names = set()
    for function in FUNCTIONS:
        reference = function_properties(template, function)["LoggingConfig"]["LogGroup"]
        assert reference.tag == "Ref", function
        group = template["Resources"][reference.value]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert group["Properties"]["RetentionInDays"] == tag("Ref", "LogRetentionDays")
        name = group["Properties"]["LogGroupName"]
        assert name.tag == "Sub" and name.value.startswith("/aws/lambda/${AWS::StackName}/"), name
        names.add(name.value)
    assert len(names) == len(FUNCTIONS)
    log_groups = [r for r in template["Resources"].values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert len(log_groups) == len(FUNCTIONS)


def test_metrics_use_the_namespace_from_the_environment(template: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """POWERTOOLS_METRICS_NAMESPACE (set by the template) decides the namespace; the code only has a
    local default. The alarms watch the namespace the template sets."""
    from chatcore.observability import emit_metrics

    def namespaces() -> set[str]:
        out = set()
        for line in capsys.readouterr().out.splitlines():
            if line.startswith("{") and '"_aws"' in line:
                out |= {d["Namespace"] for d in json.loads(line)["_aws"]["CloudWatchMetrics"]}
        return out

    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "ChatBackendStaging")
    emit_metrics("chat", {"Outcome": "ok"}, {"ChatRequests": (1, "Count")})
    assert namespaces() == {"ChatBackendStaging"}
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE")
    emit_metrics("chat", {"Outcome": "ok"}, {"ChatRequests": (1, "Count")})
    assert namespaces() == {"ChatBackend"}  # local default

    configured = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    watched = {node["Namespace"] for node in walk(template["Resources"]) if isinstance(node, dict) and "Namespace" in node}
    assert watched == {configured}
