"""The embedded emulator's own cost per DynamoDB request (`python -m bench --only emulator`).

Times single requests from one boto3 client, one after another, against a fresh emulator process
(`devtools/emulator.py`) with the template's table: GetItem, PutItem, a conditional UpdateItem, a
Query returning 20 items and a 3-item TransactWriteItems, each on a table that already holds a few
hundred items. The client side (botocore building, signing and parsing) is timed separately, so the
emulator's share is the difference. `python -m devtools.emulator --profile FILE` profiles the
emulator process itself (cProfile, written on stop); `--profile` here passes it on.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

ROUNDS = 400
QUICK_ROUNDS = 60
FILLER_CONVERSATIONS = 20
QUERY_ITEMS = 20


def _client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing", config=Config(retries={"mode": "standard", "max_attempts": 1}))


def _operations(client: Any, table: str) -> list[tuple[str, Callable[[int], Any]]]:
    """(label, call(n)) for each measured request; the table is filled here first."""
    for c in range(FILLER_CONVERSATIONS):
        for m in range(QUERY_ITEMS):
            client.put_item(TableName=table, Item={
                "pk": {"S": f"C#bench-{c}"}, "sk": {"S": f"M#{m:04d}"}, "role": {"S": "user"},
                "text": {"S": "x" * 300}, "gsi1pk": {"S": f"U#bench-{c % 4}"}, "gsi1sk": {"S": f"{c:04d}{m:04d}"}})
    client.put_item(TableName=table, Item={"pk": {"S": "L#bench"}, "sk": {"S": "L"}, "count": {"N": "0"}})

    def get(n: int) -> Any:
        return client.get_item(TableName=table, Key={"pk": {"S": "C#bench-3"}, "sk": {"S": "M#0005"}})

    def put(n: int) -> Any:
        return client.put_item(TableName=table, Item={
            "pk": {"S": "C#bench-put"}, "sk": {"S": f"M#{n % 50:04d}"}, "text": {"S": "y" * 300},
            "gsi1pk": {"S": "U#bench-put"}, "gsi1sk": {"S": f"{n:06d}"}})

    def update(n: int) -> Any:
        return client.update_item(
            TableName=table, Key={"pk": {"S": "L#bench"}, "sk": {"S": "L"}},
            UpdateExpression="SET #c = #c + :one, #at = :now", ConditionExpression="#c < :limit",
            ExpressionAttributeNames={"#c": "count", "#at": "updated_at"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":now": {"N": str(n)}, ":limit": {"N": "1000000"}})

    def query(n: int) -> Any:
        return client.query(TableName=table, KeyConditionExpression="pk = :pk AND begins_with(sk, :m)",
                            ExpressionAttributeValues={":pk": {"S": "C#bench-7"}, ":m": {"S": "M#"}},
                            ScanIndexForward=False, Limit=QUERY_ITEMS)

    def transact(n: int) -> Any:
        conversation = f"C#bench-tx-{uuid.uuid4().hex[:12]}"
        return client.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": conversation}, "sk": {"S": "M#0001"},
                                                  "text": {"S": "z" * 300}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": table, "Item": {"pk": {"S": conversation}, "sk": {"S": "I#u1"}}}},
            {"Update": {"TableName": table, "Key": {"pk": {"S": conversation}, "sk": {"S": "META"}},
                        "UpdateExpression": "SET #n = if_not_exists(#n, :zero) + :one, gsi1pk = :u, gsi1sk = :t",
                        "ExpressionAttributeNames": {"#n": "messages"},
                        "ExpressionAttributeValues": {":zero": {"N": "0"}, ":one": {"N": "1"},
                                                      ":u": {"S": "U#bench-tx"}, ":t": {"S": f"{n:06d}"}}}}])

    return [("GetItem", get), ("PutItem (300-byte item, one GSI)", put),
            ("UpdateItem, conditional (SET + ADD-style counter)", update),
            (f"Query, {QUERY_ITEMS} items", query), ("TransactWriteItems, 3 items", transact)]


def _client_only_ms(client: Any, call: Callable[[int], Any], rounds: int) -> float:
    """botocore's own time for the call: the same request answered by a stub before it is sent."""
    from botocore.awsrequest import AWSResponse

    sample: dict[str, Any] = {}

    def capture(http_response: Any, parsed: Any, **_: Any) -> None:
        sample.setdefault("raw", http_response.content)

    client.meta.events.register("after-call.dynamodb", capture)
    call(0)
    client.meta.events.unregister("after-call.dynamodb", capture)

    class _Raw:
        def stream(self, **_: Any) -> Any:
            yield sample["raw"]

    def answer(request: Any, **_: Any) -> AWSResponse:
        return AWSResponse(request.url, 200, {"content-type": "application/x-amz-json-1.0"}, _Raw())

    client.meta.events.register_first("before-send.dynamodb", answer)
    try:
        times = []
        for n in range(rounds):
            began = time.perf_counter()
            call(n + 1)
            times.append((time.perf_counter() - began) * 1000)
    finally:
        client.meta.events.unregister("before-send.dynamodb", answer)
    return statistics.median(times)


def measure(rounds: int = ROUNDS, profile: str | None = None) -> list[tuple[str, float, float, float]]:
    """(operation, median ms, p95 ms, client-only median ms) against a fresh emulator."""
    from devtools.emulator import start_emulator
    from devtools.template_tables import create_tables

    emulator = start_emulator(ttl_sweep_seconds=0, profile=profile)
    try:
        client = _client(emulator.endpoint)
        table = f"bench-{uuid.uuid4().hex[:8]}"
        create_tables(client, table_name=table)
        results = []
        for label, call in _operations(client, table):
            for n in range(20):  # warm up: connection, botocore's caches, moto's lazy imports
                call(rounds + n)
            times = []
            for n in range(rounds):
                began = time.perf_counter()
                call(n)
                times.append((time.perf_counter() - began) * 1000)
            times.sort()
            client_ms = _client_only_ms(client, call, rounds)
            results.append((label, statistics.median(times), times[int(len(times) * 0.95) - 1], client_ms))
        return results
    finally:
        emulator.stop()


def run(quick: bool = False) -> str:
    results = measure(QUICK_ROUNDS if quick else ROUNDS)
    lines = [
        "## Emulator: cost of one DynamoDB request (`bench/emulator.py`)",
        "",
        f"One boto3 client, requests one after another against a fresh emulator process (`devtools/emulator.py`) "
        f"holding {FILLER_CONVERSATIONS * QUERY_ITEMS} items of the template's table, "
        f"{QUICK_ROUNDS if quick else ROUNDS} requests per row. "
        "\"client only\" is botocore's own share (the same call answered by a stub before it is sent); "
        "the emulator's share (HTTP server, moto, accounting) is the difference.",
        "",
        "| request | median ms | p95 ms | client only ms | emulator share ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, median, p95, client_ms in results:
        lines.append(f"| {label} | {median:.2f} | {p95:.2f} | {client_ms:.2f} | {median - client_ms:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--profile", help="have the emulator write a cProfile of its requests to this file")
    args = parser.parse_args()
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    for label, median, p95, client_ms in measure(rounds, args.profile):
        print(f"{label:55s} median {median:6.2f}  p95 {p95:6.2f}  client {client_ms:5.2f}  "
              f"emulator {median - client_ms:5.2f} ms")


if __name__ == "__main__":
    main()
