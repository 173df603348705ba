"""devtools.moto_patches: transactions roll back exactly, and cost only the items they touch.

Behaviour is checked against the emulator process (where the launcher applies the patches); the cost
is checked structurally in this process (what gets deep-copied, what gets scanned), never by timing.
"""

from __future__ import annotations

import copy
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from devtools import moto_patches
from devtools.template_tables import create_tables
from tests.moto_dynamodb import Table


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _put(table: Table, pk: str, sk: str, **attributes: Any) -> None:
    table.client.put_item(TableName=table.name, Item={**_key(pk, sk), **attributes})


def _everything(table: Table) -> list[dict[str, Any]]:
    items = table.client.scan(TableName=table.name, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def _reasons(exc: pytest.ExceptionInfo[ClientError]) -> list[str]:
    return [reason.get("Code", "None") for reason in exc.value.response["CancellationReasons"]]


def test_a_failed_condition_rolls_back_every_write_of_the_transaction(table: Table) -> None:
    _put(table, "C#1", "META", n={"N": "1"}, tags={"L": [{"S": "a"}]})
    _put(table, "C#1", "MSG#1", text={"S": "to be deleted"})
    _put(table, "C#2", "META", n={"N": "7"})
    before = _everything(table)
    with pytest.raises(ClientError) as failure:
        table.client.transact_write_items(TransactItems=[
            {"Put": {"TableName": table.name, "Item": {**_key("C#1", "MSG#2"), "text": {"S": "new"}}}},
            # Update mutates moto's item in place: the rollback must restore the old values, not the object.
            {"Update": {"TableName": table.name, "Key": _key("C#1", "META"),
                        "UpdateExpression": "SET n = n + :one, tags = list_append(tags, :t) REMOVE gone",
                        "ExpressionAttributeValues": {":one": {"N": "1"}, ":t": {"L": [{"S": "b"}]}}}},
            {"Delete": {"TableName": table.name, "Key": _key("C#1", "MSG#1")}},
            {"Put": {"TableName": table.name, "Item": {**_key("C#3", "META"), "n": {"N": "1"}}}},
            {"ConditionCheck": {"TableName": table.name, "Key": _key("C#2", "META"),
                                "ConditionExpression": "n = :expected", "ExpressionAttributeValues": {":expected": {"N": "8"}}}},
        ])
    assert failure.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _reasons(failure) == ["None", "None", "None", "None", "ConditionalCheckFailed"]
    assert _everything(table) == before


def test_writes_after_the_failing_entry_are_rolled_back_too(table: Table) -> None:
    """moto keeps applying the entries after a failed one (to report every reason): those are undone as well."""
    _put(table, "U#1", "LEASE", count={"N": "3"})
    before = _everything(table)
    with pytest.raises(ClientError) as failure:
        table.client.transact_write_items(TransactItems=[
            {"Update": {"TableName": table.name, "Key": _key("U#1", "LEASE"), "UpdateExpression": "SET #c = #c + :one",
                        "ConditionExpression": "#c < :max", "ExpressionAttributeNames": {"#c": "count"},
                        "ExpressionAttributeValues": {":one": {"N": "1"}, ":max": {"N": "3"}}}},
            {"Put": {"TableName": table.name, "Item": {**_key("U#1", "MSG#9"), "text": {"S": "after the failure"}}}},
        ])
    assert _reasons(failure) == ["ConditionalCheckFailed", "None"]
    assert _everything(table) == before


def test_a_successful_transaction_applies_every_entry(table: Table) -> None:
    _put(table, "C#1", "META", n={"N": "1"})
    table.client.transact_write_items(TransactItems=[
        {"Put": {"TableName": table.name, "Item": {**_key("C#1", "MSG#1"), "text": {"S": "hi"}},
                 "ConditionExpression": "attribute_not_exists(pk)"}},
        {"Update": {"TableName": table.name, "Key": _key("C#1", "META"), "UpdateExpression": "SET n = n + :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}}}},
    ])
    assert table.number("C#1", "META", "n") == 2
    assert table.item("C#1", "MSG#1") == {**_key("C#1", "MSG#1"), "text": {"S": "hi"}}


def test_two_operations_on_one_item_are_refused_without_writing(table: Table) -> None:
    with pytest.raises(ClientError, match="multiple operations"):
        table.client.transact_write_items(TransactItems=[
            {"Put": {"TableName": table.name, "Item": {**_key("C#1", "A"), "v": {"N": "1"}}}},
            {"Put": {"TableName": table.name, "Item": {**_key("C#1", "A"), "v": {"N": "2"}}}},
        ])
    assert _everything(table) == []


def test_base_table_queries_read_only_their_partition_and_answer_as_before(table: Table) -> None:
    for conversation in range(6):
        for message in range(12):
            _put(table, f"C#{conversation}", f"MSG#{message:03d}", n={"N": str(message)})
    request = {"TableName": table.name, "KeyConditionExpression": "pk = :pk AND begins_with(sk, :m)",
               "ExpressionAttributeValues": {":pk": {"S": "C#3"}, ":m": {"S": "MSG#"}}}
    newest = table.client.query(**request, ScanIndexForward=False, Limit=5)
    assert [item["sk"]["S"] for item in newest["Items"]] == [f"MSG#{n:03d}" for n in range(11, 6, -1)]
    rest = table.client.query(**request, ScanIndexForward=False, ExclusiveStartKey=newest["LastEvaluatedKey"])
    assert [item["sk"]["S"] for item in rest["Items"]] == [f"MSG#{n:03d}" for n in range(6, -1, -1)]
    assert table.client.query(**{**request, "ExpressionAttributeValues": {":pk": {"S": "C#none"},
                                                                           ":m": {"S": "MSG#"}}})["Items"] == []


# --- cost, in this process: what the patched functions copy and scan ---------------------------------


@pytest.fixture
def patched_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto in-process (mock_aws) with a 120-item table; the patches applied for the test, then reverted."""
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(client, table_name="big")
        for n in range(120):
            client.put_item(TableName="big", Item={**_key(f"C#{n % 12}", f"MSG#{n:04d}"), "text": {"S": "x" * 50}})
        yield client
    moto_patches.revert()


def _count_deep_copies(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count deep copies of moto Tables and Items from now on."""
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table as MotoTable

    counts = {"Table": 0, "Item": 0}

    def counting(kind: str) -> Any:
        def deep_copy(self: Any, memo: dict[int, Any]) -> Any:
            counts[kind] += 1
            clone = type(self).__new__(type(self))
            memo[id(self)] = clone
            clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
            return clone
        return deep_copy

    monkeypatch.setattr(MotoTable, "__deepcopy__", counting("Table"), raising=False)
    monkeypatch.setattr(Item, "__deepcopy__", counting("Item"), raising=False)
    return counts


def _transaction(client: Any) -> None:
    client.transact_write_items(TransactItems=[
        {"Put": {"TableName": "big", "Item": {**_key("C#1", "MSG#new"), "text": {"S": "y"}}}},
        {"Update": {"TableName": "big", "Key": _key("C#2", "MSG#0002"), "UpdateExpression": "SET t = :t",
                    "ExpressionAttributeValues": {":t": {"S": "z"}}}},
    ])


def test_unpatched_moto_copies_the_whole_table_per_transaction(patched_moto: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The problem the patch fixes (and proof that the counting below would see it)."""
    moto_patches.revert()
    counts = _count_deep_copies(monkeypatch)
    _transaction(patched_moto)
    # Once per entry naming the table, in fact: two entries, two whole-table copies.
    assert counts["Table"] == 2 and counts["Item"] >= 240


def test_patched_transaction_copies_only_the_items_it_touches(patched_moto: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    moto_patches.apply()
    counts = _count_deep_copies(monkeypatch)
    _transaction(patched_moto)
    # Two snapshots (one of them "absent": no copy), plus moto's own copy of the updated item.
    assert counts == {"Table": 0, "Item": 2}


def test_patched_base_table_query_does_not_scan_the_table(patched_moto: Any) -> None:
    moto_patches.apply()
    scans = []
    original = moto_patches._originals["all_items"]
    # Not monkeypatch.setitem: its undo would run after the fixture's revert() and leave a stale entry behind.
    moto_patches._originals["all_items"] = lambda table: scans.append(table) or original(table)
    try:
        items = patched_moto.query(TableName="big", KeyConditionExpression="pk = :pk",
                                   ExpressionAttributeValues={":pk": {"S": "C#4"}})["Items"]
        assert [item["sk"]["S"] for item in items] == [f"MSG#{n:04d}" for n in range(4, 120, 12)]
        assert scans == []
        patched_moto.scan(TableName="big", Limit=1)  # anything else still goes through moto's own scan
        assert len(scans) == 1
    finally:
        moto_patches._originals["all_items"] = original


def _stored_item(pk: str, sk: str) -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import DynamoType

    table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].tables["big"]
    return table.items[DynamoType({"S": pk})][DynamoType({"S": sk})]


def _overwritten_item_is_freed(client: Any) -> bool:
    """Overwrite a stored item (put, then an update and a transaction that copy it): is the old object freed?"""
    client.put_item(TableName="big", Item={**_key("C#3", "MSG#0003"), "text": {"S": "old"}})
    old = weakref.ref(_stored_item("C#3", "MSG#0003"))
    client.put_item(TableName="big", Item={**_key("C#3", "MSG#0003"), "text": {"S": "new"}})
    client.update_item(TableName="big", Key=_key("C#3", "MSG#0003"), UpdateExpression="SET t = :t",
                       ExpressionAttributeValues={":t": {"S": "z"}})
    _transaction(client)
    gc.collect()
    return old() is None


def test_unpatched_moto_keeps_every_item_it_ever_created(patched_moto: Any) -> None:
    """moto's BaseModel appends every instance to a class-level list (for its dashboard): nothing is freed."""
    moto_patches.revert()
    assert not _overwritten_item_is_freed(patched_moto)


def test_patched_moto_frees_overwritten_items(patched_moto: Any) -> None:
    moto_patches.apply()
    assert _overwritten_item_is_freed(patched_moto)
    assert _stored_item("C#3", "MSG#0003").attrs["t"].value == "z"  # the live item is the new one


_ATTRIBUTE_VALUES: list[dict[str, Any]] = [
    {"S": "text"}, {"S": ""}, {"S": "ünïcødé ✓"}, {"N": "-12.5e3"}, {"BOOL": False}, {"BOOL": True},
    {"NULL": True}, {"B": "AAEC"}, {"B": b"\x00\x01\x02"}, {"SS": ["a", "b"]}, {"NS": ["1", "2.5"]},
    {"BS": ["AAE=", b"\x03"]}, {"L": []}, {"M": {}},
    {"M": {"k": {"S": "v"}, "n": {"L": [{"N": "1"}, {"M": {"deep": {"BOOL": True}}}, {"NULL": True}]}}},
    {"L": [{"SS": ["x"]}, {"B": "AA=="}]},
    # Not plain AttributeValues: the patch must leave them to moto's generic serializer.
    {"S": None}, {"S": "a", "N": "1"}, {"M": {"k": "v"}}, {"L": [None]}, {"SS": [1, 2]}, {"X": "y"},
]


def _serialized_get_item(value: dict[str, Any]) -> str:
    from moto.core.serialize import JSONSerializer, XFormedAttributePicker
    from moto.core.utils import get_service_model

    operation = get_service_model("dynamodb").operation_model("GetItem")
    serializer = JSONSerializer(operation, value_picker=XFormedAttributePicker())
    body: str = serializer.serialize({"Item": {"a": value, "b": {"S": "x"}}})["body"]
    return body


@pytest.mark.parametrize("value", _ATTRIBUTE_VALUES, ids=lambda value: repr(value)[:40])
def test_patched_serializer_writes_attribute_values_as_moto_does(patched_moto: Any, value: dict[str, Any]) -> None:
    moto_patches.revert()
    generic = _serialized_get_item(value)
    moto_patches.apply()
    assert _serialized_get_item(value) == generic


def _tree(node: Any) -> Any:
    """A parsed expression as plain data (without parent links), to compare two parses."""
    if isinstance(node, list | tuple):
        return [_tree(child) for child in node]
    if not hasattr(node, "__dict__"):
        return node
    return (type(node).__name__, {k: _tree(v) for k, v in vars(node).items() if k != "parent"})


def test_patched_update_expression_parser_reuses_the_parse_and_never_alters_it(patched_moto: Any,
                                                                            table: Table) -> None:
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    expression = "SET #c = if_not_exists(#c, :zero) + :one REMOVE gone"
    fresh = _tree(UpdateExpressionParser.make(expression))
    moto_patches.apply()
    first = UpdateExpressionParser.make(expression)
    assert UpdateExpressionParser.make(expression) is first and _tree(first) == fresh
    for _ in range(2):  # a parse error is not kept: moto's own error, every time
        with pytest.raises(Exception, match=r"Invalid UpdateExpression|Syntax"):
            UpdateExpressionParser.make("SET = :broken")
    # Against the emulator (patched there too): the same expression on two items, each updated on its own.
    for pk in ("C#a", "C#b", "C#a"):
        table.client.update_item(TableName=table.name, Key=_key(pk, "META"), UpdateExpression=expression,
                                 ExpressionAttributeNames={"#c": "count"},
                                 ExpressionAttributeValues={":zero": {"N": "0"}, ":one": {"N": "1"}})
    assert table.number("C#a", "META", "count") == 2 and table.number("C#b", "META", "count") == 1
    # The emulator's moto ran its validator on its cached parse three times; ours did too, and it is unchanged.
    patched_moto.update_item(TableName="big", Key=_key("C#1", "META"), UpdateExpression=expression,
                             ExpressionAttributeNames={"#c": "count"},
                             ExpressionAttributeValues={":zero": {"N": "0"}, ":one": {"N": "1"}})
    assert _tree(UpdateExpressionParser.make(expression)) == fresh


_PROJECTED_ITEM: dict[str, Any] = {
    **_key("C#9", "MEM#1"), "text": {"S": "likes tea"}, "kind": {"S": "preference"},
    "embedding": {"L": [{"N": str(n / 7)} for n in range(300)]},
    "nested": {"M": {"a": {"M": {"b": {"S": "deep"}, "c": {"N": "3"}}}, "list": {"L": [{"S": "x"}, {"S": "y"}]}}},
    "items": {"L": [{"M": {"v": {"N": "1"}}}, {"M": {"v": {"N": "2"}}}]},
}


@pytest.mark.parametrize("projection", [
    "pk, sk, #text, kind", "nested.a.b, items[1].v", "nested.list[0], absent_attr, #text", "embedding[2]",
    "nested", "pk, sk, #text, kind, embedding",
])
def test_patched_projection_answers_as_moto_does(patched_moto: Any, projection: str) -> None:
    patched_moto.put_item(TableName="big", Item=_PROJECTED_ITEM)

    def read() -> tuple[Any, Any]:
        names = {"#text": "text"} if "#text" in projection else {}
        got = patched_moto.get_item(TableName="big", Key=_key("C#9", "MEM#1"), ProjectionExpression=projection,
                                    **({"ExpressionAttributeNames": names} if names else {}))["Item"]
        queried = patched_moto.query(TableName="big", KeyConditionExpression="pk = :pk",
                                     ExpressionAttributeValues={":pk": {"S": "C#9"}},
                                     ProjectionExpression=projection,
                                     **({"ExpressionAttributeNames": names} if names else {}))["Items"]
        return got, queried

    moto_patches.revert()
    expected = read()
    moto_patches.apply()
    assert read() == expected


def test_patched_projection_never_converts_an_attribute_it_leaves_out(patched_moto: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedding a memory digest leaves out is not converted at all (moto converted the whole item
    once per path: nine times for the digest's projection)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    patched_moto.put_item(TableName="big", Item=_PROJECTED_ITEM)
    moto_patches.apply()
    converted: list[int] = []
    original = DynamoType.to_regular_json
    monkeypatch.setattr(DynamoType, "to_regular_json",
                        lambda self: converted.append(len(self.value) if self.type == "L" else 0) or original(self))
    item = patched_moto.query(TableName="big", KeyConditionExpression="pk = :pk",
                              ExpressionAttributeValues={":pk": {"S": "C#9"}},
                              ProjectionExpression="pk, sk, #text, kind",
                              ExpressionAttributeNames={"#text": "text"})["Items"][0]
    assert set(item) == {"pk", "sk", "text", "kind"}
    assert 300 not in converted  # the 300-number vector was never touched
