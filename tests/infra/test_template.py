"""template.yaml has the properties the deployment depends on (streaming, layer, table, IAM, alarms)."""

from __future__ import annotations

import re
import stat
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.template_tables import CloudFormationTag

from .conftest import REPO_ROOT

FUNCTIONS = ("ChatFunction", "HealthFunction", "SummarizeFunction")
PSEUDO_PARAMETERS = {"AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::StackName", "AWS::NoValue",
                     "AWS::URLSuffix", "AWS::StackId"}


def walk(node: Any) -> Iterator[Any]:
    """Every node of a parsed template, depth first."""
    yield node
    if isinstance(node, CloudFormationTag):
        yield from walk(node.value)
    elif isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def tag(name: str, value: Any) -> CloudFormationTag:
    return CloudFormationTag(name, value)


def function_properties(template: dict[str, Any], name: str) -> dict[str, Any]:
    resource = template["Resources"][name]
    assert resource["Type"] == "AWS::Serverless::Function"
    return resource["Properties"]


def policy_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner, statement) for every inline statement of every function and managed policy, both If branches."""
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            documents = [p for p in resource["Properties"].get("Policies", []) if isinstance(p, dict)]
        elif resource["Type"] == "AWS::IAM::ManagedPolicy":
            documents = [resource["Properties"]["PolicyDocument"]]
        else:
            continue
        for document in documents:
            for statement in document["Statement"]:
                if isinstance(statement, CloudFormationTag) and statement.tag == "If":
                    candidates = statement.value[1:]
                else:
                    candidates = [statement]
                for candidate in candidates:
                    if isinstance(candidate, dict):
                        yield name, candidate


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_globals_give_every_function_python313_arm64_tracing_and_the_common_layer(template: dict[str, Any]) -> None:
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.13"
    assert globals_["Architectures"] == ["arm64"]
    assert globals_["Tracing"] == "Active"
    assert globals_["Layers"] == [tag("Ref", "CommonLayer")]
    for name in FUNCTIONS:
        properties = function_properties(template, name)
        # An override here would take the function off the shared runtime, architecture or layer list.
        assert "Runtime" not in properties and "Architectures" not in properties, name
        assert tag("Ref", "CommonLayer") not in properties.get("Layers", []), f"{name} repeats the common layer"


def test_globals_environment_lists_the_shared_settings(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    expected = {"TABLE_NAME", "STAGE", "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL", "AUTH_MODE", "JWT_ISSUER",
                "JWT_AUDIENCE", "CONVERSATION_TTL_DAYS", "OPENAI_API_KEY_SECRET", "ANTHROPIC_API_KEY_SECRET",
                "GEMINI_API_KEY_SECRET", "OPENAI_BASE_URL", "DEFAULT_MODEL", "BEDROCK_ENABLED",
                "MODEL_REGISTRY_PARAMETER"}
    assert expected <= set(variables)
    assert variables["TABLE_NAME"] == tag("Ref", "ChatTable")
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "ChatBackend"
    assert variables["OPENAI_API_KEY_SECRET"] == tag("Ref", "OpenAIApiKeySecretName")


def test_common_layer_is_built_for_python313_arm64(template: dict[str, Any]) -> None:
    layer = template["Resources"]["CommonLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "layers/common/"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Properties"]["RetentionPolicy"] == "Delete"
    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}
    # SAM copies the ContentUri root into python/: the package must sit at the root, not under python/.
    assert (REPO_ROOT / "layers/common/chatcore/__init__.py").is_file()
    assert (REPO_ROOT / "layers/common/requirements.txt").is_file()


def test_chat_function_streams_through_the_web_adapter(template: dict[str, Any]) -> None:
    chat = function_properties(template, "ChatFunction")
    assert chat["CodeUri"] == "functions/chat/"
    assert chat["Handler"] == "run.sh"
    assert chat["Timeout"] == tag("Ref", "ChatTimeoutSeconds")
    assert chat["MemorySize"] == tag("Ref", "ChatMemorySize")
    assert template["Parameters"]["ChatMemorySize"]["Default"] == 256
    variables = chat["Environment"]["Variables"]
    assert variables["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert variables["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert variables["AWS_LWA_READINESS_CHECK_PATH"] == "/healthz"
    assert variables["AWS_LWA_PORT"] == "8080"
    assert variables["SUMMARIZE_FUNCTION_NAME"] == tag("Ref", "SummarizeFunction")
    url = chat["FunctionUrlConfig"]
    assert url["InvokeMode"] == "RESPONSE_STREAM"
    assert url["AuthType"] == tag("Ref", "FunctionUrlAuthType")

    # The adapter layer: the parameter when given, else the public Arm64 layer of the stack's region.
    (adapter,) = chat["Layers"]
    assert adapter.tag == "If"
    condition, default_arn, override = adapter.value
    assert template["Conditions"][condition] == tag("Equals", [tag("Ref", "LambdaAdapterLayerArn"), ""])
    assert default_arn.tag == "Sub"
    assert re.fullmatch(r"arn:\$\{AWS::Partition\}:lambda:\$\{AWS::Region\}:753240598075:layer:"
                        r"LambdaAdapterLayerArm64:\d+", default_arn.value)
    assert override == tag("Ref", "LambdaAdapterLayerArn")


def test_run_sh_starts_uvicorn_on_the_adapter_port(template: dict[str, Any]) -> None:
    run_sh = REPO_ROOT / "functions/chat/run.sh"
    content = run_sh.read_bytes()
    assert run_sh.stat().st_mode & stat.S_IXUSR, "run.sh must be executable"
    assert b"\r" not in content, "run.sh must have LF line ends"
    assert content.startswith(b"#!/bin/bash")
    assert b"AWS_LWA_PORT" in content and b"main:app" in content and b"/opt/python" in content


def test_cors_lives_only_in_the_function_url(template: dict[str, Any]) -> None:
    chat = function_properties(template, "ChatFunction")
    cors = chat["FunctionUrlConfig"]["Cors"]
    assert cors["AllowOrigins"] == tag("Ref", "CorsAllowOrigins")
    assert set(cors["AllowMethods"]) == {"GET", "POST", "PATCH", "DELETE"}
    assert {"content-type", "authorization", "x-api-key"} <= set(cors["AllowHeaders"])
    assert "retry-after" in cors["ExposeHeaders"]
    assert any(header.startswith("x-ratelimit-") for header in cors["ExposeHeaders"])
    assert isinstance(cors["MaxAge"], int)
    assert chat["Environment"]["Variables"]["CORS_IN_APP"] == "false"
    all_variables = {**template["Globals"]["Function"]["Environment"]["Variables"], **chat["Environment"]["Variables"]}
    assert "CORS_ALLOW_ORIGINS" not in all_variables


async def test_the_app_adds_no_cors_headers_with_the_template_environment(
        template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The template's CORS_IN_APP value, read by Settings in Lambda, really turns the app's CORS off."""
    import httpx
    from chatcore.api.app import create_app
    from chatcore.settings import Settings

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "chat")
    # No storage, limits or auth: only the CORS behaviour is under test here.
    for name in ("TABLE_NAME", "DYNAMODB_ENDPOINT_URL", "CORS_ALLOW_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AUTH_MODE": "none", "AUTH_ALLOW_NONE_IN_LAMBDA": "true", "LIMITS_ENABLED": "false",
                        "MEMORY": "none", "BREAKER_STORE": "memory"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CORS_IN_APP", function_properties(template, "ChatFunction")["Environment"]["Variables"]
                       ["CORS_IN_APP"])
    settings = Settings.from_env()
    assert settings.cors_in_app is False
    app = create_app(settings)
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.options("/api/chat", headers=preflight)
        health = await client.get("/healthz", headers={"origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers
    assert health.status_code == 200 and "access-control-allow-origin" not in health.headers


def test_health_function_has_a_public_url_and_a_schedule(template: dict[str, Any]) -> None:
    health = function_properties(template, "HealthFunction")
    assert health["CodeUri"] == "functions/health/" and health["Handler"] == "app.handler"
    assert health["MemorySize"] == 512 and health["Timeout"] == 30
    assert health["FunctionUrlConfig"]["AuthType"] == "NONE"
    schedules = [event for event in health["Events"].values() if event["Type"] == "ScheduleV2"]
    assert len(schedules) == 1
    assert schedules[0]["Properties"]["ScheduleExpression"] == tag("Ref", "HealthCheckSchedule")
    assert template["Parameters"]["HealthCheckSchedule"]["Default"] == "rate(5 minutes)"


def test_summarizer_retries_twice_then_lands_in_an_encrypted_queue(template: dict[str, Any]) -> None:
    summarize = function_properties(template, "SummarizeFunction")
    assert summarize["CodeUri"] == "functions/summarize/" and summarize["Handler"] == "app.handler"
    assert summarize["Timeout"] == 120
    invoke_config = summarize["EventInvokeConfig"]
    assert invoke_config["MaximumRetryAttempts"] == 2
    on_failure = invoke_config["DestinationConfig"]["OnFailure"]
    assert on_failure == {"Type": "SQS", "Destination": tag("GetAtt", "SummarizeFailureQueue.Arn")}
    queue = template["Resources"]["SummarizeFailureQueue"]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True


def test_table_matches_the_single_table_design(template: dict[str, Any]) -> None:
    table = template["Resources"]["ChatTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert table["DeletionPolicy"] == "Retain" and table["UpdateReplacePolicy"] == "Retain"
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                       {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert {(a["AttributeName"], a["AttributeType"]) for a in properties["AttributeDefinitions"]} == {
        ("pk", "S"), ("sk", "S"), ("gsi1pk", "S"), ("gsi1sk", "S")}
    (index,) = properties["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "gsi1"
    assert index["KeySchema"] == [{"AttributeName": "gsi1pk", "KeyType": "HASH"},
                                  {"AttributeName": "gsi1sk", "KeyType": "RANGE"}]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {"SSEEnabled": True}


def test_no_wildcard_actions_and_no_broad_policy_templates(template: dict[str, Any]) -> None:
    statements = list(policy_statements(template))
    assert {owner for owner, _ in statements} >= set(FUNCTIONS)
    for owner, statement in statements:
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"{owner}: wildcard action {action}"
    for name in FUNCTIONS:
        for policy in function_properties(template, name).get("Policies", []):
            # SAM policy templates such as DynamoDBCrudPolicy grant wildcard-ish action sets.
            assert not (isinstance(policy, dict) and "Statement" not in policy), f"{name}: policy template {policy}"


def test_chat_function_gets_exactly_the_table_actions_it_needs(template: dict[str, Any]) -> None:
    statements = [s for owner, s in policy_statements(template) if owner == "ChatFunction"]
    table = [s for s in statements if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))
             and s["Action"] != "dynamodb:SearchVectors"]
    assert len(table) == 1
    search = [s for s in statements if s["Action"] == "dynamodb:SearchVectors"]  # long-term memory recall
    assert [s["Resource"] for s in search] == [tag("Sub", "${ChatTable.Arn}/index/memories")]
    assert set(table[0]["Action"]) == {f"dynamodb:{a}" for a in (
        "GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "BatchWriteItem", "TransactWriteItems",
        "ConditionCheckItem")}
    assert table[0]["Resource"] == [tag("GetAtt", "ChatTable.Arn"), tag("Sub", "${ChatTable.Arn}/index/*")]
    invoke = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    assert invoke and invoke[0]["Resource"] == tag("GetAtt", "SummarizeFunction.Arn")
    actions = {a for s in statements for a in as_list(s["Action"])}
    assert "bedrock:InvokeModelWithResponseStream" in actions


def test_secret_reads_are_granted_only_for_configured_names(template: dict[str, Any]) -> None:
    policy = template["Resources"]["ProviderConfigReadPolicy"]
    assert policy["Condition"] == "HasProviderConfig"
    for name in FUNCTIONS:
        assert tag("If", ["HasProviderConfig", tag("Ref", "ProviderConfigReadPolicy"), tag("Ref", "AWS::NoValue")]) \
            in function_properties(template, name)["Policies"]
    statements = [s for owner, s in policy_statements(template) if owner == "ProviderConfigReadPolicy"]
    assert {s["Action"] for s in statements} == {"secretsmanager:GetSecretValue", "ssm:GetParameter"}
    for statement in statements:
        for resource in statement["Resource"]:
            # Each resource is conditional on its own parameter being non-empty.
            assert resource.tag == "If" and resource.value[2] == tag("Ref", "AWS::NoValue")
            condition = template["Conditions"][resource.value[0]]
            assert condition.tag == "Not"


def test_every_reference_resolves(template: dict[str, Any]) -> None:
    known = set(template["Parameters"]) | set(template["Resources"]) | PSEUDO_PARAMETERS
    # SAM generates these from FunctionUrlConfig.
    known |= {f"{name}Url" for name in FUNCTIONS if "FunctionUrlConfig" in template["Resources"][name]["Properties"]}
    for node in walk(template):
        if not isinstance(node, CloudFormationTag):
            continue
        if node.tag == "Ref":
            assert node.value in known, f"!Ref {node.value}"
        elif node.tag == "GetAtt":
            assert node.value.split(".")[0] in known, f"!GetAtt {node.value}"
        elif node.tag == "Sub":
            text, variables = (node.value, {}) if isinstance(node.value, str) else (node.value[0], node.value[1])
            for name in re.findall(r"\$\{([^}!]+)\}", text):
                assert name in variables or name.split(".")[0] in known, f"!Sub ${{{name}}}"
        elif node.tag in ("If", "Condition"):
            condition = node.value[0] if node.tag == "If" else node.value
            assert condition in template["Conditions"], f"condition {condition}"


def test_parameters_have_the_documented_defaults(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    assert parameters["Stage"]["AllowedValues"] == ["dev", "prod"]
    assert parameters["AuthMode"]["Default"] == "api_key"
    assert set(parameters["AuthMode"]["AllowedValues"]) == {"jwt", "api_key"}
    assert parameters["FunctionUrlAuthType"]["Default"] == "NONE"
    assert set(parameters["FunctionUrlAuthType"]["AllowedValues"]) == {"NONE", "AWS_IAM"}
    assert parameters["CorsAllowOrigins"]["Type"] == "CommaDelimitedList"
    assert parameters["ChatTimeoutSeconds"]["Default"] == 900
    assert parameters["ConversationTtlDays"]["Default"] == 30
    assert parameters["BedrockEnabled"]["Default"] == "false"
    for name in ("OpenAIApiKeySecretName", "AnthropicApiKeySecretName", "GeminiApiKeySecretName",
                 "ModelRegistryParameterName", "LambdaAdapterLayerArn", "JwtIssuer", "JwtAudience"):
        assert parameters[name]["Default"] == "", name
    for name in ("OpenAIBaseUrl", "DefaultModel"):
        assert name in parameters


@pytest.mark.parametrize("value, accepted", [
    ("", True), ("ssm:/chat/dev/openai", True), ("chat/dev/openai", True), ("prod-openai-key", True),
    ("ssm:chat/no-leading-slash", False), ("sk-live key", False), ("arn:aws:secretsmanager:x", False),
])
def test_secret_name_pattern_keeps_the_derived_arns_valid(template: dict[str, Any], value: str,
                                                          accepted: bool) -> None:
    """SSM names must be absolute and secret names must not contain ':' for the IAM ARNs to match."""
    pattern = template["Parameters"]["OpenAIApiKeySecretName"]["AllowedPattern"]
    assert (re.fullmatch(pattern, value) is not None) is accepted


def test_alarms_watch_provider_health_and_chat_error_rate(template: dict[str, Any]) -> None:
    down = template["Resources"]["ProviderDownAlarm"]["Properties"]
    assert (down["Namespace"], down["MetricName"]) == ("ChatBackend", "ProvidersDown")
    assert down["Dimensions"] == [{"Name": "service", "Value": "health"}]
    assert (down["Statistic"], down["Period"], down["EvaluationPeriods"]) == ("Maximum", 300, 2)
    assert (down["Threshold"], down["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")

    rate = template["Resources"]["ChatErrorRateAlarm"]["Properties"]
    metrics = {m["Id"]: m for m in rate["Metrics"]}
    stats = {m["MetricStat"]["Metric"]["MetricName"]: (i, m["MetricStat"]) for i, m in metrics.items()
             if "MetricStat" in m}
    assert set(stats) == {"ChatErrors", "ChatRequests"}
    for _, stat_ in stats.values():
        assert stat_["Metric"]["Namespace"] == "ChatBackend"
        assert stat_["Metric"]["Dimensions"] == [{"Name": "service", "Value": "chat"}]
        assert stat_["Period"] == 300
    (expression,) = [m for m in metrics.values() if "Expression" in m]
    assert expression["ReturnData"] is True
    assert stats["ChatErrors"][0] in expression["Expression"] and stats["ChatRequests"][0] in expression["Expression"]
    assert "100" in expression["Expression"] and rate["Threshold"] == 10
    assert rate["ComparisonOperator"] == "GreaterThanThreshold" and rate["EvaluationPeriods"] == 3
    assert rate["TreatMissingData"] == "notBreaching"


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs["ChatUrl"]["Value"] == tag("GetAtt", "ChatFunctionUrl.FunctionUrl")
    assert outputs["HealthUrl"]["Value"] == tag("GetAtt", "HealthFunctionUrl.FunctionUrl")
    assert outputs["TableName"]["Value"] == tag("Ref", "ChatTable")
    assert outputs["SummarizeFunctionName"]["Value"] == tag("Ref", "SummarizeFunction")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_function_handler_exists(template: dict[str, Any], name: str) -> None:
    properties = function_properties(template, name)
    code = REPO_ROOT / properties["CodeUri"]
    module, _, attribute = properties["Handler"].rpartition(".")
    entry = code / properties["Handler"] if properties["Handler"].endswith(".sh") else code / f"{module}.py"
    # A deleted or renamed entry point is a broken deployment: fail, never skip.
    assert entry.is_file(), f"{name}: {entry.relative_to(REPO_ROOT)} (Handler {properties['Handler']}) is missing"
    if entry.suffix == ".py":
        assert re.search(rf"^(def|async def) {attribute}\(|^{attribute}\s*=", entry.read_text(), re.M), \
            f"{entry} defines no {attribute}"


def test_samconfig_has_dev_and_prod_environments() -> None:
    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text())
    assert config["version"] == 0.1
    assert config["default"]["global"]["parameters"]["region"] == "us-east-1"
    assert config["default"]["validate"]["parameters"]["lint"] is True
    for env, stage in (("default", "dev"), ("prod", "prod")):
        deploy = config[env]["deploy"]["parameters"]
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        assert deploy["resolve_s3"] is True
        assert f"Stage={stage}" in deploy["parameter_overrides"]
    assert config["prod"]["global"]["parameters"]["stack_name"] != config["default"]["global"]["parameters"][
        "stack_name"]


def test_every_app_variable_the_template_sets_is_read_by_settings(template: dict[str, Any]) -> None:
    """A misspelt variable would be silently ignored at run time; settings.py is where all are read."""
    variables = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for name in FUNCTIONS:
        variables |= set(function_properties(template, name).get("Environment", {}).get("Variables", {}))
    # Read by the Lambda runtime, the Web Adapter or Powertools rather than by chatcore.
    platform = {name for name in variables if name.startswith(("AWS_", "POWERTOOLS_"))} | {"LOG_LEVEL"}
    settings_source = (REPO_ROOT / "layers/common/chatcore/settings.py").read_text()
    read = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', settings_source))
    assert variables - platform - read == set()
    assert {"JWT_JWKS_URL", "CONVERSATION_TTL_DAYS", "SUMMARIZE_FUNCTION_NAME"} <= variables
