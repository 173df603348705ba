"""Which DynamoDB local tools use, and the embedded emulator's lifecycle: own process, saved data."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import boto3
import pytest

from devtools.emulator import Emulator
from devtools.local_dynamodb import LocalDynamoDBError, choose_backend, local_dynamodb
from devtools.template_tables import create_tables


@pytest.mark.parametrize("environ, backend", [
    ({}, "moto"),
    # Credentials in the shell are how Bedrock is reached: they never switch DynamoDB to real AWS.
    ({"AWS_ACCESS_KEY_ID": "AKIA...", "AWS_SECRET_ACCESS_KEY": "x"}, "moto"),
    ({"AWS_PROFILE": "work"}, "moto"),
    ({"DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:8001"}, "endpoint"),
    ({"DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:8001", "AWS_PROFILE": "work"}, "endpoint"),
    ({"LOCAL_DYNAMODB": "moto", "AWS_PROFILE": "work"}, "moto"),
    ({"LOCAL_DYNAMODB": "moto", "DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:8001"}, "moto"),
    ({"LOCAL_DYNAMODB": "aws"}, "aws"),
    ({"LOCAL_DYNAMODB": "AWS", "DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:8001"}, "aws"),
])
def test_backend_rule(environ: dict[str, str], backend: str) -> None:
    assert choose_backend(environ) == backend


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(ValueError, match="LOCAL_DYNAMODB"):
        choose_backend({"LOCAL_DYNAMODB": "dynalite"})


def _port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _client(environ: dict[str, str]) -> object:
    return boto3.client("dynamodb", endpoint_url=environ["DYNAMODB_ENDPOINT_URL"], region_name=environ["AWS_REGION"],
                        aws_access_key_id=environ["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=environ["AWS_SECRET_ACCESS_KEY"])


def test_embedded_emulator_is_its_own_process_serving_the_template_table(tmp_path: Path) -> None:
    environ: dict[str, str] = {"AWS_SESSION_TOKEN": "must-not-leak", "LOCAL_DYNAMODB_DIR": str(tmp_path)}
    with local_dynamodb(environ) as database:
        assert database.backend == "moto" and database.emulator is not None
        assert database.emulator.pid != os.getpid() and database.emulator.process.poll() is None
        endpoint = environ["DYNAMODB_ENDPOINT_URL"]
        assert endpoint == database.endpoint_url and endpoint.startswith("http://127.0.0.1:")
        assert environ["TABLE_NAME"] == "chat-local"
        # No usable credentials in that environment: dummy ones, so the client can sign.
        assert environ["AWS_ACCESS_KEY_ID"] == "local" and "AWS_SESSION_TOKEN" not in environ
        client = _client(environ)
        assert client.describe_table(TableName="chat-local")["Table"]["TableStatus"] == "ACTIVE"  # type: ignore[attr-defined]
        assert str(tmp_path) in database.describe()
        process = database.emulator.process
        port = int(endpoint.rsplit(":", 1)[1])
        assert _port_is_open(port)
    assert process.returncode == 0
    assert not _port_is_open(port)


def test_shell_credentials_are_kept_for_bedrock_and_used_only_to_sign(aws_emulator: Emulator) -> None:
    """Same credential handling for the embedded emulator and a local endpoint (here: the suite's emulator)."""
    environ = {"AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE", "AWS_SECRET_ACCESS_KEY": "fake", "AWS_SESSION_TOKEN": "tok",
               "DYNAMODB_ENDPOINT_URL": aws_emulator.endpoint, "TABLE_NAME": f"creds-{uuid.uuid4().hex[:8]}"}
    with local_dynamodb(environ) as database:
        assert database.backend == "endpoint"
        assert (environ["AWS_ACCESS_KEY_ID"], environ["AWS_SESSION_TOKEN"]) == ("AKIAFAKEFAKEFAKE", "tok")
        assert _client(environ).describe_table(TableName=environ["TABLE_NAME"])  # type: ignore[attr-defined]


def _put(environ: dict[str, str], conversation: str) -> None:
    _client(environ).put_item(TableName="chat-local", Item={"pk": {"S": f"CONV#{conversation}"},  # type: ignore[attr-defined]
                                                           "sk": {"S": "META"}, "n": {"N": "1"}})


def _keys(environ: dict[str, str]) -> list[str]:
    items = _client(environ).scan(TableName="chat-local")["Items"]  # type: ignore[attr-defined]
    return sorted(item["pk"]["S"] for item in items)


def test_data_survives_a_restart_and_reset_starts_empty(tmp_path: Path) -> None:
    """The emulator saves its tables when it stops and loads them when it starts. A second emulator
    on the same directory (say `make invoke` while `make dev` runs) keeps its data in memory only."""
    first_env, second_env = {"LOCAL_DYNAMODB_DIR": str(tmp_path)}, {"LOCAL_DYNAMODB_DIR": str(tmp_path)}
    with local_dynamodb(first_env), local_dynamodb(second_env) as second:
        assert second.emulator is not None and second.emulator.state_file is None
        assert "in memory only" in second.describe()
        _put(first_env, "kept")
        _put(second_env, "ephemeral")
    assert (tmp_path / "moto-dynamodb.pickle").is_file()

    environ = {"LOCAL_DYNAMODB_DIR": str(tmp_path)}
    with local_dynamodb(environ):
        assert _keys(environ) == ["CONV#kept"]

    environ = {"LOCAL_DYNAMODB_DIR": str(tmp_path)}
    with local_dynamodb(environ, reset=True) as database:
        assert _keys(environ) == []
        assert database.emulator is not None and any("reset" in note for note in database.emulator.notes)
    assert (tmp_path / "moto-dynamodb.pickle.before-reset").is_file()


def test_configured_endpoint_gets_the_tables_created(aws_emulator: Emulator) -> None:
    name = f"mine-{uuid.uuid4().hex[:8]}"
    environ = {"DYNAMODB_ENDPOINT_URL": aws_emulator.endpoint, "TABLE_NAME": name, "AWS_ACCESS_KEY_ID": "x",
               "AWS_SECRET_ACCESS_KEY": "x"}
    with local_dynamodb(environ) as database:
        assert (database.backend, database.endpoint_url, database.table_name) == ("endpoint", aws_emulator.endpoint,
                                                                                  name)
        assert database.emulator is None
    client = boto3.client("dynamodb", endpoint_url=aws_emulator.endpoint, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    assert client.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE"


def test_real_aws_needs_the_table_to_exist(aws_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """`LOCAL_DYNAMODB=aws` with the emulator standing in for AWS (botocore's own endpoint override)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", aws_emulator.endpoint)
    missing = f"chat-dev-{uuid.uuid4().hex[:8]}"
    environ = {"LOCAL_DYNAMODB": "aws", "TABLE_NAME": missing, "AWS_ACCESS_KEY_ID": "AKIAFAKE",
               "AWS_SECRET_ACCESS_KEY": "fake", "DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:1"}
    with pytest.raises(LocalDynamoDBError, match=rf"{missing}.*does not exist.*sam deploy"):
        local_dynamodb(environ).__enter__()

    client = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    create_tables(client, table_name=missing)
    with local_dynamodb(environ) as database:
        assert database.backend == "aws" and database.endpoint_url is None and database.emulator is None
        assert "real AWS" in database.describe()
    assert "DYNAMODB_ENDPOINT_URL" not in environ  # the app talks to AWS itself, not to a stale endpoint
    assert environ["AWS_ACCESS_KEY_ID"] == "AKIAFAKE"
