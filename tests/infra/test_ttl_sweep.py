"""Time to live in the emulator (devtools.ttl_sweep): expired items are deleted, as DynamoDB does.

Which items a sweep deletes is checked on the suite's emulator with an explicit sweep
(`Emulator.expire()`); that the emulator sweeps on its own is checked on an emulator of its own,
started with a short `--ttl-sweep-seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.emulator import Emulator, start_emulator
from devtools.template_tables import create_tables
from devtools.ttl_sweep import FIVE_YEARS_S
from tests import moto_dynamodb
from tests.moto_dynamodb import Table


def _put(table: Table, sk: str, **attributes: Any) -> None:
    table.client.put_item(TableName=table.name, Item={"pk": {"S": "C#1"}, "sk": {"S": sk}, **attributes})


def _expiring(seconds_from_now: float) -> dict[str, Any]:
    return {"expires_at": {"N": str(int(time.time() + seconds_from_now))}}


def _keys(table: Table) -> set[str]:
    items = table.client.scan(TableName=table.name, ConsistentRead=True)["Items"]
    return {item["sk"]["S"] for item in items}


def _in_gsi(table: Table) -> set[str]:
    items = table.client.query(TableName=table.name, IndexName="gsi1", KeyConditionExpression="gsi1pk = :u",
                               ExpressionAttributeValues={":u": {"S": "U#1"}})["Items"]
    return {item["sk"]["S"] for item in items}


def _fill(table: Table) -> None:
    index_keys = {"gsi1pk": {"S": "U#1"}}
    _put(table, "expired", **_expiring(-60), **index_keys, gsi1sk={"S": "1"})
    _put(table, "future", **_expiring(3600), **index_keys, gsi1sk={"S": "2"})
    _put(table, "no-ttl", **index_keys, gsi1sk={"S": "3"})
    _put(table, "ttl-as-string", expires_at={"S": str(int(time.time() - 60))})  # not a Number: ignored
    _put(table, "ttl-too-old", **_expiring(-FIVE_YEARS_S - 86_400))  # over five years in the past: ignored
    _put(table, "ttl-nested", data={"M": {"expires_at": {"N": "1"}}})  # only the top-level attribute counts


SURVIVORS = {"future", "no-ttl", "ttl-as-string", "ttl-too-old", "ttl-nested"}


def test_a_sweep_deletes_expired_items_from_the_table_and_its_index(aws_emulator: Emulator, table: Table) -> None:
    _fill(table)
    assert _keys(table) == SURVIVORS | {"expired"}
    aws_emulator.expire()
    assert _keys(table) == SURVIVORS
    assert _in_gsi(table) == {"future", "no-ttl"}
    assert table.item("C#1", "expired") is None


def test_a_table_without_ttl_keeps_its_expired_items(aws_emulator: Emulator, table: Table) -> None:
    table.client.update_time_to_live(TableName=table.name,
                                     TimeToLiveSpecification={"AttributeName": "expires_at", "Enabled": False})
    _put(table, "expired", **_expiring(-60))
    aws_emulator.expire()
    assert _keys(table) == {"expired"}


def test_the_sweep_follows_the_tables_ttl_attribute(aws_emulator: Emulator, table: Table) -> None:
    table.client.update_time_to_live(TableName=table.name,
                                     TimeToLiveSpecification={"AttributeName": "gone_at", "Enabled": True})
    _put(table, "by-expires-at", **_expiring(-60))
    _put(table, "by-gone-at", gone_at={"N": str(int(time.time() - 60))})
    aws_emulator.expire()
    assert _keys(table) == {"by-expires-at"}


def test_expiry_is_free_in_the_accounting(aws_emulator: Emulator, table: Table) -> None:
    _put(table, "expired", **_expiring(-60))
    aws_emulator.reset_stats()
    aws_emulator.expire()
    assert aws_emulator.stats() == {}


@pytest.fixture
def sweeping_emulator() -> Iterator[Emulator]:
    """An emulator of its own that sweeps every 0.2 s."""
    emulator = start_emulator(ttl_sweep_seconds=0.2)
    try:
        yield emulator
    finally:
        emulator.stop()


def _table_in(emulator: Emulator) -> Table:
    client = moto_dynamodb.client(url=emulator.endpoint)
    create_tables(client, table_name="chat-ttl")
    return Table(name="chat-ttl", client=client, endpoint=emulator.endpoint)


def test_the_emulator_sweeps_on_its_own(sweeping_emulator: Emulator) -> None:
    table = _table_in(sweeping_emulator)
    _fill(table)
    deadline = time.monotonic() + 30  # a bound on the wait, not a timing assertion
    while "expired" in _keys(table) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _keys(table) == SURVIVORS
    assert _in_gsi(table) == {"future", "no-ttl"}


def test_an_explicit_sweep_counts_what_it_deleted() -> None:
    emulator = start_emulator(ttl_sweep_seconds=0)  # no periodic sweep: this one's count is exact
    try:
        table = _table_in(emulator)
        for n in range(3):
            _put(table, f"expired-{n}", **_expiring(-60))
        _put(table, "future", **_expiring(3600))
        assert emulator.expire() == 3
        assert emulator.expire() == 0
        assert _keys(table) == {"future"}
    finally:
        emulator.stop()
