"""Real local upstreams for routing and health tests: moto's DynamoDB server and the llmock emulator.

Both listen on 127.0.0.1 on a free port, in a background thread. Imported by the conftest of
`tests/routing` and `tests/health`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


def create_table(client: Any, name: str) -> None:
    """The one table, named `name`, created from the definitions in template.yaml."""
    from devtools.template_tables import create_tables

    create_tables(client, table_name=name)


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """The shared moto server on 127.0.0.1 (all services; requests evaluated one at a time, as
    DynamoDB applies writes to an item, so racing clients see real conditional-write semantics)."""
    from tests.moto_dynamodb import endpoint

    return endpoint()


@pytest.fixture
def table(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A fresh table per test: (endpoint, table name). The name comes from template.yaml when it exists."""
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"chat-test-{uuid.uuid4().hex[:8]}"  # never a table an earlier test (or another module) left
    create_table(client, name)
    yield moto_endpoint, name
    client.delete_table(TableName=name)


from tests.llmock_upstream import LLMock, llmock, llmock_server  # noqa: E402

__all__ = ["LLMock", "llmock", "llmock_server", "moto_endpoint", "table"]
