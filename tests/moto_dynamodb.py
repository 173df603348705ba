"""The AWS emulator of the test suite: the same process `make dev` runs (`devtools.emulator`).

One emulator per test session, started on first use and stopped at exit: moto's server in its own
process on 127.0.0.1, serving every moto service (DynamoDB, S3, SSM, ...), with the transaction and
query patches of `devtools.moto_patches`, but no periodic TTL sweep (see `emulator()`). It evaluates
one request at a time, restoring DynamoDB's per-item write atomicity that moto's threaded server
lacks, while clients still race over concurrent connections: the race tests prove exactness against it.

The fixtures built on this (in tests/conftest.py) are the only way tests reach it: `aws_emulator`
(the process), `dynamodb` (a client) and `table` (a fresh, empty table per test with the schema of
template.yaml, so tests never share state).
"""

from __future__ import annotations

import atexit
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from devtools.emulator import Emulator, start_emulator
from devtools.template_tables import create_tables

REGION = "us-east-1"
# Dummy credentials: the emulator accepts anything, and real keys must never be used by a test.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}

_lock = threading.Lock()
_emulator: Emulator | None = None


def emulator() -> Emulator:
    """The session's emulator process, started on first use (in memory only: nothing is saved)."""
    global _emulator
    with _lock:
        if _emulator is None:
            # No periodic TTL sweep: tests on frozen clocks write expiry times that a wall-clock sweep could
            # delete mid-test. tests/infra/test_ttl_sweep.py starts emulators of its own to test the sweep.
            _emulator = start_emulator(ttl_sweep_seconds=0)
            atexit.register(_emulator.stop)
    return _emulator


def endpoint() -> str:
    """The emulator's URL."""
    return emulator().endpoint


def client(service: str = "dynamodb", url: str | None = None, *, account_id: str | None = None) -> Any:
    """A client for the emulator (dummy credentials, a pool big enough for the races).

    `account_id` (12 digits) gives the client an account of its own in the emulator: an empty
    namespace, for tests that need fixed table names.
    """
    made = boto3.session.Session().client(
        service, endpoint_url=url or endpoint(), region_name=REGION, aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 3},
                      connect_timeout=5, read_timeout=60))
    if account_id is not None:
        def add_account(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account_id

        made.meta.events.register("before-sign", add_account)
    return made


@dataclass
class Table:
    """A table in the emulator: its name, a client and the endpoint (for code that builds its own client)."""

    name: str
    client: Any
    endpoint: str

    def item(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = self.client.get_item(TableName=self.name, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                                        ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return item

    def number(self, pk: str, sk: str, attribute: str) -> int:
        item = self.item(pk, sk) or {}
        return int(float(item.get(attribute, {}).get("N", "0")))


def new_table(dynamodb: Any | None = None) -> Table:
    """A fresh, empty table with the template's schema."""
    dynamodb = dynamodb or client()
    name = f"chat-test-{uuid.uuid4().hex[:10]}"
    create_tables(dynamodb, table_name=name)
    return Table(name=name, client=dynamodb, endpoint=endpoint())
