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
from pathlib import Path
from typing import Any

import pytest

from devtools.template_tables import load_template

from .conftest import REPO_ROOT
from .test_template import walk

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
