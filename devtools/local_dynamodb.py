"""Which DynamoDB local tools talk to, and the embedded moto emulator when none is configured.

The rule (also in docs/deploy.md):

1. `LOCAL_DYNAMODB=moto` forces the embedded emulator; `LOCAL_DYNAMODB=aws` forbids it.
2. Otherwise, `DYNAMODB_ENDPOINT_URL` set: use that endpoint (e.g. DynamoDB Local) and create the
   template's tables there if they are missing.
3. Otherwise, real AWS credentials configured (`AWS_ACCESS_KEY_ID` or `AWS_PROFILE`): use real AWS and
   the existing table named by `TABLE_NAME`; nothing is created.
4. Otherwise: start moto's `ThreadedMotoServer` on 127.0.0.1 (a free port), point
   `DYNAMODB_ENDPOINT_URL` at it with dummy credentials, and create the tables from template.yaml.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from devtools.template_tables import create_tables

Backend = Literal["moto", "endpoint", "aws"]

DEFAULT_TABLE_NAME = "chat-local"
DEFAULT_REGION = "us-east-1"


def choose_backend(environ: MutableMapping[str, str]) -> Backend:
    """Apply the rule in the module docstring to an environment."""
    override = environ.get("LOCAL_DYNAMODB", "").strip().lower()
    if override not in ("", "moto", "aws"):
        raise ValueError(f"LOCAL_DYNAMODB must be 'moto' or 'aws', got {override!r}")
    if override == "moto":
        return "moto"
    if environ.get("DYNAMODB_ENDPOINT_URL", "").strip():
        return "endpoint"
    if override == "aws" or environ.get("AWS_ACCESS_KEY_ID") or environ.get("AWS_PROFILE"):
        return "aws"
    return "moto"


@dataclass
class LocalDynamoDB:
    """The DynamoDB a local process uses; `stop()` shuts the embedded emulator down if there is one."""

    backend: Backend
    table_name: str
    endpoint_url: str | None
    server: Any = None

    def describe(self) -> str:
        """One line for the console, e.g. `moto at http://127.0.0.1:40123, table chat-local`."""
        where = {"moto": f"embedded moto at {self.endpoint_url}", "endpoint": f"endpoint {self.endpoint_url}",
                 "aws": "real AWS"}[self.backend]
        return f"DynamoDB: {where}, table {self.table_name}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def _client(environ: MutableMapping[str, str], endpoint_url: str) -> Any:
    import boto3

    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    # Credentials from `environ` when it has them (it may be a plain dict, not os.environ).
    return boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=region,
                        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID"),
                        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY"),
                        aws_session_token=environ.get("AWS_SESSION_TOKEN"))


def start_local_dynamodb(environ: MutableMapping[str, str] | None = None) -> LocalDynamoDB:
    """Pick the backend, start moto if needed, export its settings into `environ`, create the tables.

    Call it before importing the app: settings are read once, on first use.
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    backend = choose_backend(env)
    table_name = env.setdefault("TABLE_NAME", DEFAULT_TABLE_NAME)
    if backend == "aws":
        return LocalDynamoDB(backend, table_name, None)
    if backend == "endpoint":
        endpoint = env["DYNAMODB_ENDPOINT_URL"].strip()
        create_tables(_client(env, endpoint), table_name=table_name)
        return LocalDynamoDB(backend, table_name, endpoint)

    from moto.server import ThreadedMotoServer

    # The emulator's werkzeug request log would print a line per DynamoDB call.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        # Dummy credentials: the emulator accepts anything, and real keys must never reach it.
        env["DYNAMODB_ENDPOINT_URL"] = endpoint
        env["AWS_ACCESS_KEY_ID"] = "local"
        env["AWS_SECRET_ACCESS_KEY"] = "local"
        env.pop("AWS_SESSION_TOKEN", None)
        env.pop("AWS_PROFILE", None)
        env.setdefault("AWS_REGION", DEFAULT_REGION)
        env.setdefault("AWS_DEFAULT_REGION", env["AWS_REGION"])
        create_tables(_client(env, endpoint), table_name=table_name)
    except BaseException:
        server.stop()
        raise
    return LocalDynamoDB(backend, table_name, endpoint, server)


@contextmanager
def local_dynamodb(environ: MutableMapping[str, str] | None = None) -> Iterator[LocalDynamoDB]:
    """`start_local_dynamodb()` for the duration of a `with` block; the emulator stops on exit."""
    database = start_local_dynamodb(environ)
    try:
        yield database
    finally:
        database.stop()
