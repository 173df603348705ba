"""Each function's IAM policy allows every DynamoDB call its code can make, and nothing it never makes.

The DynamoDB operations are read from the code the function can reach. First the modules: its entry
module and, transitively, every `chatcore` module imported from it (function-level imports included,
since most of them are lazy). Then, within those modules, the functions: starting from the entry's
`handler` (and every module's top-level code), any function or method whose name the reached code
mentions (a call, an attribute, a reference passed to `asyncio.to_thread`...) is reached too, and a
mentioned class brings its dunder methods (constructors, context managers, iterators). Matching by
name over-approximates (every `load` is reached once any `.load` is mentioned), which is the safe
direction: a call the policy does not allow would fail only in AWS, with AccessDenied. It lets a
role be narrower than the modules it imports: the summarizer imports the conversation store but
only reads a conversation and updates its summary.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest

from devtools.template_tables import CloudFormationTag, load_template

from .conftest import REPO_ROOT
from .test_template import as_list, walk

LAYER = REPO_ROOT / "layers" / "common"
ENTRIES = {
    "ChatFunction": REPO_ROOT / "functions" / "chat" / "main.py",
    "HealthFunction": REPO_ROOT / "functions" / "health" / "app.py",
    "SummarizeFunction": REPO_ROOT / "functions" / "summarize" / "app.py",
}
OPERATIONS = {
    "get_item": "GetItem", "batch_get_item": "BatchGetItem", "put_item": "PutItem", "update_item": "UpdateItem",
    "delete_item": "DeleteItem", "query": "Query", "scan": "Scan", "batch_write_item": "BatchWriteItem",
    "transact_write_items": "TransactWriteItems", "transact_get_items": "TransactGetItems",
    "search_vectors": "SearchVectors",
}
# Allowed without a direct call: items written inside TransactWriteItems need their own actions.
IMPLIED = {"TransactWriteItems": {"PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem"}}


def module_path(name: str) -> Path | None:
    base = LAYER / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_names(tree: ast.Module, *, top_level_only: bool) -> list[str]:
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in names if name.split(".")[0] == "chatcore"]


def reachable_sources(entry: Path) -> set[Path]:
    """The entry file and every chatcore module it imports, transitively, lazy imports included.

    A package `__init__` that runs only because one of its submodules is imported contributes
    its module-level imports, not the lazy ones inside its functions (nobody called those).
    """
    full: set[Path] = set()
    top_only: set[Path] = set()
    pending: list[tuple[Path, bool]] = [(entry, True)]
    while pending:
        path, follow_all = pending.pop()
        if path in full or (not follow_all and path in top_only):
            continue
        (full if follow_all else top_only).add(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name in imported_names(tree, top_level_only=not follow_all):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                found = module_path(".".join(parts[:i]))
                if found is not None:
                    pending.append((found, i == len(parts) or found.name != "__init__.py"))
    return full | top_only


FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
ENTRY_FUNCTION = "handler"


def mentioned_names(nodes: list[ast.AST]) -> set[str]:
    """Every plain name and attribute name used anywhere under `nodes`."""
    names: set[str] = set()
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
    return names


def reachable_code(sources: set[Path], entry: Path) -> list[ast.AST]:
    """The top-level code of every source (the chat entry is just `app = create_app()`) and every function
    reachable by name from it and from the entry's `handler`."""
    functions: dict[str, list[FunctionNode]] = {}
    classes: dict[str, list[ast.ClassDef]] = {}
    top_level: list[ast.AST] = []
    entry_functions: list[FunctionNode] = []
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, FunctionNode):
                functions.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append(node)
        for statement in tree.body:
            if isinstance(statement, ast.ClassDef):
                # Class bodies run at import; their methods only when reached.
                top_level += [s for s in statement.body if not isinstance(s, FunctionNode | ast.ClassDef)]
                top_level += statement.decorator_list
            elif isinstance(statement, FunctionNode):
                top_level += statement.decorator_list
                if path == entry and statement.name == ENTRY_FUNCTION:
                    entry_functions.append(statement)
            else:
                top_level.append(statement)
    reached: dict[int, ast.AST] = {}
    pending: list[ast.AST] = [*top_level, *entry_functions]
    while pending:
        node = pending.pop()
        if id(node) in reached:
            continue
        reached[id(node)] = node
        for name in mentioned_names([node]):
            pending += functions.get(name, [])
            for cls in classes.get(name, []):
                # Called implicitly: construction, `with`/`async with`, iteration, calls on instances.
                pending += [f for f in cls.body if isinstance(f, FunctionNode)
                            and f.name.startswith("__") and f.name.endswith("__")]
                pending += [base for base in cls.bases]
    return list(reached.values())


def dynamodb_calls(sources: set[Path], entry: Path) -> set[str]:
    calls: set[str] = set()
    for root in reachable_code(sources, entry):
        for node in ast.walk(root):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in OPERATIONS:
                calls.add(OPERATIONS[node.func.attr])
    return calls


def allowed_actions(template: dict[str, Any], function: str) -> set[str]:
    actions: set[str] = set()
    for node in walk(template["Resources"][function]["Properties"].get("Policies", [])):
        if isinstance(node, dict) and "Action" in node:
            listed = node["Action"] if isinstance(node["Action"], list) else [node["Action"]]
            actions |= {a.removeprefix("dynamodb:") for a in listed if isinstance(a, str) and a.startswith("dynamodb:")}
    return actions


@pytest.mark.parametrize("function", sorted(ENTRIES))
def test_policy_allows_exactly_the_dynamodb_calls_the_code_makes(function: str) -> None:
    calls = dynamodb_calls(reachable_sources(ENTRIES[function]), ENTRIES[function])
    allowed = allowed_actions(load_template(), function)
    assert calls, "the function's code was found and makes DynamoDB calls"
    assert calls <= allowed, f"{function} calls {sorted(calls - allowed)} without permission"
    implied = set().union(*(IMPLIED.get(call, set()) for call in calls))
    unused = allowed - calls - implied
    assert not unused, f"{function} is allowed {sorted(unused)} but never calls it (least privilege)"


# --- Secrets read for server tools' headers -------------------------------------------------------

STACK = "chat-backend-dev"
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::StackName": STACK}
SECRET_ACTIONS = {"secretsmanager:GetSecretValue", "ssm:GetParameter"}


def fetches_tool_secrets(sources: set[Path], entry: Path) -> bool:
    """Whether the reachable code fetches a secret for a tool: `fetch_secret(..., "tool")`, called directly
    or handed to `asyncio.to_thread`."""
    for root in reachable_code(sources, entry):
        for node in ast.walk(root):
            if isinstance(node, ast.Call) and "fetch_secret" in mentioned_names([node.func, *node.args]) \
                    and any(isinstance(a, ast.Constant) and a.value == "tool" for a in node.args):
                return True
    return False


def substituted(value: Any) -> str | None:
    """A `!Sub` of pseudo parameters resolved for the stack above; None for anything else (an ARN derived from
    a parameter, such as a provider key's, grants what that parameter names, never the tools' names)."""
    if not (isinstance(value, CloudFormationTag) and value.tag == "Sub" and isinstance(value.value, str)):
        return None
    if any(name not in PSEUDO for name in re.findall(r"\$\{([^}]+)\}", value.value)):
        return None
    return re.sub(r"\$\{([^}]+)\}", lambda m: PSEUDO[m.group(1)], value.value)


def secret_statements(template: dict[str, Any], function: str) -> list[tuple[str, dict[str, Any]]]:
    """(condition or "", statement) of the function's own secret-reading statements (its inline policies)."""
    found = []
    for policy in template["Resources"][function]["Properties"].get("Policies", []):
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            condition, candidate = ((statement.value[0], statement.value[1])
                                    if isinstance(statement, CloudFormationTag) else ("", statement))
            if isinstance(candidate, dict) and set(as_list(candidate["Action"])) & SECRET_ACTIONS:
                found.append((condition, candidate))
    return found


def arn_of(name: str) -> str:
    """The ARN a `chatcore.secrets` name is read from (a Secrets Manager ARN ends in a random suffix)."""
    if name.startswith("ssm:"):
        return f"arn:aws:ssm:us-east-1:123456789012:parameter{name[4:]}"
    return f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name.removeprefix('secretsmanager:')}-AbC123"


def granting(statements: list[tuple[str, dict[str, Any]]], arn: str) -> list[tuple[str, dict[str, Any]]]:
    """The statements that allow reading `arn`, matching Action and Resource wildcards as IAM does."""
    action = "ssm:GetParameter" if ":ssm:" in arn else "secretsmanager:GetSecretValue"
    return [(c, s) for c, s in statements if action in as_list(s["Action"])
            and any(fnmatch.fnmatchcase(arn, r) for r in map(substituted, as_list(s["Resource"])) if r)]


TOOL_SECRETS = (f"{STACK}/tools/orders-token", f"ssm:/{STACK}/tools/orders-token")


@pytest.mark.parametrize("function", sorted(ENTRIES))
def test_only_a_function_that_fetches_tool_secrets_may_read_them(function: str) -> None:
    template = load_template()
    statements = secret_statements(template, function)
    grants = [granting(statements, arn_of(name)) for name in TOOL_SECRETS]
    if fetches_tool_secrets(reachable_sources(ENTRIES[function]), ENTRIES[function]):
        assert all(grants), f"{function} fetches tool header secrets without a grant"
        # Granted only when server tools can be configured at all (ToolsParameterName).
        assert {condition for grant in grants for condition, _ in grant} == {"HasToolsParameter"}
    else:
        assert not any(grants), f"{function} may read tool secrets but never fetches one (least privilege)"
    assert fetches_tool_secrets(reachable_sources(ENTRIES["ChatFunction"]), ENTRIES["ChatFunction"])


@pytest.mark.parametrize("name", [
    f"{STACK}/tools/orders-token", f"secretsmanager:{STACK}/tools/orders-token", f"ssm:/{STACK}/tools/orders-token",
    f"ssm:/{STACK}/tools/team/weather-key",
    f"{STACK}/openai-api-key", f"ssm:/{STACK}/openai-api-key", "chat-backend-prod/tools/orders-token",
    "ssm:/chat-backend-prod/tools/orders-token", f"{STACK}-tools/orders-token", f"ssm:/{STACK}-tools/x",
    f"ssm:{STACK}/tools/no-leading-slash", "tools/orders-token", f"other/{STACK}/tools/x",
])
def test_a_tool_secret_name_is_accepted_exactly_when_the_chat_role_may_read_it(name: str) -> None:
    """The cold-start check (`TOOL_SECRET_PREFIX`, as the template sets it) and the grant agree, name by name:
    a deployed tool never fails on AccessDenied, and the role reads no secret outside the tools' names."""
    from chatcore.service.tools import parse_tools

    template = load_template()
    prefix = substituted(template["Resources"]["ChatFunction"]["Properties"]["Environment"]["Variables"]
                         ["TOOL_SECRET_PREFIX"])
    tool = {"orders": {"inputSchema": {"type": "object"}, "execute": {
        "type": "http", "url": "https://orders.internal/tool", "headers": {"authorization": {"secret": name}}}}}
    try:
        parse_tools(tool, "test", secret_prefix=prefix)
        accepted = True
    except ValueError as exc:
        assert "must be named" in str(exc)
        accepted = False
    assert bool(granting(secret_statements(template, "ChatFunction"), arn_of(name))) is accepted
    assert accepted is (f"{STACK}/tools/" in name and "-tools" not in name and not name.startswith("other/")
                        and "no-leading-slash" not in name)
