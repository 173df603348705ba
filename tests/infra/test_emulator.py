"""The emulator process (devtools.emulator): every moto service on one port, one request evaluated at a
time, and DynamoDB requests counted by operation with the capacity units they consume."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devtools.capacity_units import item_size, read_units, write_units
from devtools.emulator import Emulator
from tests import moto_dynamodb
from tests.moto_dynamodb import Table


def test_s3_and_ssm_are_served_by_the_same_process(aws_emulator: Emulator) -> None:
    s3 = moto_dynamodb.client("s3")
    s3.create_bucket(Bucket="attachments-test")
    s3.put_object(Bucket="attachments-test", Key="a/b.txt", Body=b"attached")
    assert s3.get_object(Bucket="attachments-test", Key="a/b.txt")["Body"].read() == b"attached"
    ssm = moto_dynamodb.client("ssm")
    ssm.put_parameter(Name="/emulator/test", Value="v", Type="String", Overwrite=True)
    assert ssm.get_parameter(Name="/emulator/test")["Parameter"]["Value"] == "v"


def test_racing_conditional_writes_let_exactly_one_through(table: Table) -> None:
    """Sixteen clients on their own connections create the same item at once: DynamoDB accepts one."""
    outcomes: list[str] = []
    start = threading.Barrier(16)

    def create(n: int) -> None:
        client = moto_dynamodb.client()
        start.wait()
        try:
            client.put_item(TableName=table.name, Item={"pk": {"S": "LEASE"}, "sk": {"S": "one"}, "by": {"N": str(n)}},
                            ConditionExpression="attribute_not_exists(pk)")
            outcomes.append("won")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])

    threads = [threading.Thread(target=create, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ConditionalCheckFailedException"] * 15 + ["won"]


def _stats_of(aws_emulator: Emulator, operation: str) -> dict[str, float]:
    return aws_emulator.stats().get(operation, {"requests": 0, "read_units": 0.0, "write_units": 0.0})


def test_requests_and_capacity_units_are_counted_at_the_emulator(aws_emulator: Emulator, table: Table) -> None:
    client = table.client
    aws_emulator.reset_stats(units=True)
    big = {"pk": {"S": "C#1"}, "sk": {"S": "MSG#1"}, "text": {"S": "x" * 1500}}  # about 1.5 KB: 2 units
    client.put_item(TableName=table.name, Item=big)
    # In the gsi1 index too (both keys present): one more write for the index.
    client.put_item(TableName=table.name, Item={"pk": {"S": "C#1"}, "sk": {"S": "META"}, "gsi1pk": {"S": "U#1"},
                                                "gsi1sk": {"S": "2026"}})
    client.transact_write_items(TransactItems=[
        {"Put": {"TableName": table.name, "Item": {"pk": {"S": "C#1"}, "sk": {"S": "MSG#2"}}}},
        {"Update": {"TableName": table.name, "Key": {"pk": {"S": "C#1"}, "sk": {"S": "MSG#1"}},
                    "UpdateExpression": "SET seen = :t", "ExpressionAttributeValues": {":t": {"BOOL": True}}}},
    ])
    client.get_item(TableName=table.name, Key={"pk": {"S": "C#1"}, "sk": {"S": "MSG#2"}})
    client.query(TableName=table.name, KeyConditionExpression="pk = :pk", ConsistentRead=True,
                 ExpressionAttributeValues={":pk": {"S": "C#1"}})
    with pytest.raises(ClientError):
        client.put_item(TableName=table.name, Item={"pk": {"S": "C#1"}, "sk": {"S": "MSG#2"}},
                        ConditionExpression="attribute_not_exists(pk)")

    stats = aws_emulator.stats()
    assert stats["PutItem"] == {"requests": 3, "read_units": 0.0, "write_units": 2.0 + 2.0 + 1.0}
    # Transactional: twice the units of each item (the 1.5 KB one: 2 x 2, the small one 2 x 1).
    assert stats["TransactWriteItems"] == {"requests": 1, "read_units": 0.0, "write_units": 6.0}
    assert stats["GetItem"] == {"requests": 1, "read_units": 0.5, "write_units": 0.0}  # eventually consistent
    assert stats["Query"] == {"requests": 1, "read_units": 1.0, "write_units": 0.0}  # 3 items < 4 KB, consistent
    aws_emulator.reset_stats()
    assert _stats_of(aws_emulator, "PutItem")["requests"] == 0


@pytest.mark.parametrize("item, size", [
    ({"pk": {"S": "abc"}}, 5),
    ({"n": {"N": "123.45"}}, 1 + 4),  # five significant digits: 3 bytes, plus 1
    ({"b": {"BOOL": True}, "z": {"NULL": True}}, 4),
    ({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}, 1 + 3 + (1 + 2) + (1 + 2)),
    ({"m": {"M": {"k": {"S": "v"}}}}, 1 + 3 + 1 + 1 + 1),
    ({"é": {"S": "é"}}, 4),  # UTF-8 bytes, not characters
])
def test_item_sizes_follow_the_dynamodb_rules(item: dict[str, Any], size: int) -> None:
    assert item_size(item) == size


def test_capacity_unit_rounding() -> None:
    small, kilobyte_and_a_bit = {"a": {"S": "x"}}, {"a": {"S": "x" * 1024}}
    assert write_units(None, small) == 1.0
    assert write_units(small, kilobyte_and_a_bit) == 2.0  # the larger of before and after
    assert write_units(None, small, transactional=True) == 2.0
    assert read_units([], consistent=False) == 0.5  # a read of nothing still costs the minimum
    assert read_units([{"a": {"S": "x" * 3000}}, {"a": {"S": "x" * 3000}}], consistent=True) == 2.0
    assert read_units([small], consistent=True, transactional=True) == 2.0


def test_units_are_counted_only_after_a_reset_that_asks_for_them(aws_emulator: Emulator, table: Table) -> None:
    aws_emulator.reset_stats()
    table.client.put_item(TableName=table.name, Item={"pk": {"S": "C#1"}, "sk": {"S": "M#1"}})
    assert aws_emulator.stats()["PutItem"] == {"requests": 1}
    aws_emulator.reset_stats(units=True)
    table.client.put_item(TableName=table.name, Item={"pk": {"S": "C#1"}, "sk": {"S": "M#1"}})
    assert aws_emulator.stats()["PutItem"] == {"requests": 1, "read_units": 0.0, "write_units": 1.0}
    aws_emulator.reset_stats()


def _raw_list_tables(connection: Any, body: bytes, **headers: str) -> Any:
    connection.request("POST", "/", body=body, headers={
        "X-Amz-Target": "DynamoDB_20120810.ListTables", "Content-Type": "application/x-amz-json-1.0",
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20200101/us-east-1/dynamodb/aws4_request, "
                         "SignedHeaders=host, Signature=x", **headers})
    return connection.getresponse()


def test_connections_are_kept_open_between_requests(aws_emulator: Emulator) -> None:
    import http.client
    from urllib.parse import urlsplit

    address = urlsplit(aws_emulator.endpoint)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        answers = []
        for body in (b"{}", b'{"Limit": 1}'):
            response = _raw_list_tables(connection, body)
            answers.append((response.status, response.will_close, "TableNames" in json.loads(response.read())))
        chunked = _raw_list_tables(connection, iter([b'{"Limit"', b": 1}"]))  # no length: http.client chunks it
        answers.append((chunked.status, chunked.will_close, "TableNames" in json.loads(chunked.read())))
        assert answers == [(200, False, True)] * 3
        closing = _raw_list_tables(connection, b"{}", Connection="close")
        closing.read()
        assert closing.will_close
    finally:
        connection.close()
