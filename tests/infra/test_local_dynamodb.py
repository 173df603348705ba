"""Which DynamoDB local tools use, and the embedded emulator's lifecycle."""

from __future__ import annotations

import socket

import boto3
import pytest

from devtools.local_dynamodb import choose_backend, local_dynamodb


@pytest.mark.parametrize("environ, backend", [
    ({}, "moto"),
    ({"AWS_ACCESS_KEY_ID": "AKIA..."}, "aws"),
    ({"AWS_PROFILE": "work"}, "aws"),
    ({"DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:8001"}, "endpoint"),
    ({"DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:8001", "AWS_PROFILE": "work"}, "endpoint"),
    ({"LOCAL_DYNAMODB": "moto", "AWS_PROFILE": "work"}, "moto"),
    ({"LOCAL_DYNAMODB": "moto", "DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:8001"}, "moto"),
    ({"LOCAL_DYNAMODB": "aws"}, "aws"),
])
def test_backend_rule(environ: dict[str, str], backend: str) -> None:
    assert choose_backend(environ) == backend


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(ValueError, match="LOCAL_DYNAMODB"):
        choose_backend({"LOCAL_DYNAMODB": "dynalite"})


def _port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_embedded_emulator_serves_the_template_table_then_stops() -> None:
    environ: dict[str, str] = {"AWS_SESSION_TOKEN": "must-not-leak"}
    with local_dynamodb(environ) as database:
        assert database.backend == "moto"
        endpoint = environ["DYNAMODB_ENDPOINT_URL"]
        assert endpoint == database.endpoint_url and endpoint.startswith("http://127.0.0.1:")
        assert environ["TABLE_NAME"] == "chat-local"
        assert "AWS_SESSION_TOKEN" not in environ
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name=environ["AWS_REGION"],
                              aws_access_key_id=environ["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=environ["AWS_SECRET_ACCESS_KEY"])
        assert client.describe_table(TableName="chat-local")["Table"]["TableStatus"] == "ACTIVE"
        port = int(endpoint.rsplit(":", 1)[1])
        assert _port_is_open(port)
    assert not _port_is_open(port)


def test_configured_endpoint_gets_the_tables_created(moto_endpoint: str) -> None:
    environ = {"DYNAMODB_ENDPOINT_URL": moto_endpoint, "TABLE_NAME": "mine", "AWS_ACCESS_KEY_ID": "x",
               "AWS_SECRET_ACCESS_KEY": "x"}
    with local_dynamodb(environ) as database:
        assert (database.backend, database.endpoint_url, database.table_name) == ("endpoint", moto_endpoint, "mine")
        assert database.server is None
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    assert client.describe_table(TableName="mine")["Table"]["TableStatus"] == "ACTIVE"


def test_real_aws_is_left_untouched() -> None:
    environ = {"AWS_PROFILE": "work", "TABLE_NAME": "chat-dev-table"}
    with local_dynamodb(environ) as database:
        assert database.backend == "aws" and database.endpoint_url is None
    assert environ == {"AWS_PROFILE": "work", "TABLE_NAME": "chat-dev-table"}
