"""Which DynamoDB local tools (`make dev`, `make invoke`) talk to, and the embedded emulator.

The rule (also in docs/local-dynamodb.md). AWS credentials in the shell never choose real AWS:

1. `LOCAL_DYNAMODB=aws`: real AWS DynamoDB and the existing table named by `TABLE_NAME`; nothing is
   created, and a missing table is a startup error that says how to create it (`sam deploy`).
2. `LOCAL_DYNAMODB=moto`, or unset without `DYNAMODB_ENDPOINT_URL`: the embedded emulator, moto's
   server in its own process (`devtools.emulator`) on 127.0.0.1, tables created from template.yaml,
   data kept in `LOCAL_DYNAMODB_DIR` (default `.dev/dynamodb/`) between runs.
3. `DYNAMODB_ENDPOINT_URL` set (and no `LOCAL_DYNAMODB`): that endpoint (e.g. DynamoDB Local); the
   template's tables are created there if missing.

With the emulator or an endpoint, the shell's AWS credentials are left alone (Bedrock keeps using
the credential chain; requests to 127.0.0.1 are merely signed with them). Only when the chain has no
usable credentials are dummy ones exported, since the DynamoDB client must sign something.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from devtools.emulator import DEFAULT_STATE_DIR, REPO_ROOT, Emulator, start_emulator
from devtools.template_buckets import DEFAULT_BUCKET_NAME, create_attachments_bucket
from devtools.template_tables import create_tables

Backend = Literal["moto", "endpoint", "aws"]

DEFAULT_TABLE_NAME = "chat-local"
DEFAULT_REGION = "us-east-1"


class LocalDynamoDBError(RuntimeError):
    """The configured DynamoDB cannot be used; the message says why and what to do."""


def choose_backend(environ: MutableMapping[str, str]) -> Backend:
    """Apply the rule in the module docstring to an environment."""
    override = environ.get("LOCAL_DYNAMODB", "").strip().lower()
    if override not in ("", "moto", "aws"):
        raise ValueError(f"LOCAL_DYNAMODB must be 'moto' or 'aws', got {override!r}")
    if override:
        return "moto" if override == "moto" else "aws"
    return "endpoint" if environ.get("DYNAMODB_ENDPOINT_URL", "").strip() else "moto"


def state_dir(environ: MutableMapping[str, str]) -> Path:
    """Where the emulator keeps its data: `LOCAL_DYNAMODB_DIR`, default `.dev/dynamodb/` in the repo."""
    configured = environ.get("LOCAL_DYNAMODB_DIR", "").strip()
    return Path(configured).expanduser().resolve() if configured else DEFAULT_STATE_DIR


@dataclass
class LocalDynamoDB:
    """The DynamoDB a local process uses; `stop()` ends the embedded emulator if there is one."""

    backend: Backend
    table_name: str
    endpoint_url: str | None
    emulator: Emulator | None = None

    def describe(self) -> str:
        """Lines for the console: which DynamoDB, which table, and where the emulator's data lives."""
        if self.backend == "aws":
            return f"DynamoDB: real AWS (LOCAL_DYNAMODB=aws), table {self.table_name}"
        if self.emulator is None:
            return f"DynamoDB: endpoint {self.endpoint_url}, table {self.table_name}"
        line = f"DynamoDB: embedded moto at {self.endpoint_url} (pid {self.emulator.pid}), table {self.table_name}"
        if self.emulator.state_file is None:
            return line + "\n  data: in memory only" + "".join(f" ({note})" for note in self.emulator.notes)
        where = self.emulator.state_file.parent
        shown = where.relative_to(REPO_ROOT) if where.is_relative_to(REPO_ROOT) else where
        return line + f"\n  data: {shown}/ (saved on exit; `make dev-reset` starts empty)"

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None


def _region(environ: MutableMapping[str, str]) -> str:
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def _has_usable_credentials(environ: MutableMapping[str, str]) -> bool:
    """Whether the AWS credential chain (without instance metadata) yields credentials for `environ`."""
    if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if environ is not os.environ and not environ.get("AWS_PROFILE"):
        return False
    import botocore.session

    session = botocore.session.Session(profile=environ.get("AWS_PROFILE") or None)
    resolver = session.get_component("credential_provider")
    for name in ("iam-role", "container-role"):  # no network probe at start-up
        resolver.remove(name)
    try:
        credentials = session.get_credentials()
        return credentials is not None and credentials.get_frozen_credentials().access_key is not None
    except Exception:
        return False


def _local_credentials(environ: MutableMapping[str, str]) -> None:
    """Make sure the DynamoDB client can sign requests to the local endpoint (see the module docstring)."""
    import botocore.session

    profile = environ.get("AWS_PROFILE")
    if profile and profile not in botocore.session.Session(profile=None).available_profiles:
        # boto3 refuses to create any client for a profile that does not exist.
        environ.pop("AWS_PROFILE")
    if _has_usable_credentials(environ):
        return
    environ["AWS_ACCESS_KEY_ID"] = "local"
    environ["AWS_SECRET_ACCESS_KEY"] = "local"
    environ.pop("AWS_SESSION_TOKEN", None)
    environ.pop("AWS_PROFILE", None)


def _client(environ: MutableMapping[str, str], endpoint_url: str | None, service: str = "dynamodb") -> Any:
    import boto3

    # Credentials from `environ` when it has them (it may be a plain dict, not os.environ).
    return boto3.session.Session(profile_name=environ.get("AWS_PROFILE") or None).client(
        service, endpoint_url=endpoint_url, region_name=_region(environ),
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=environ.get("AWS_SESSION_TOKEN"))


def check_table(client: Any, table_name: str, region: str) -> None:
    """Raise `LocalDynamoDBError` unless `table_name` exists and can be described through `client`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.describe_table(TableName=table_name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise LocalDynamoDBError(
                f"DynamoDB table {table_name!r} does not exist in {region} (LOCAL_DYNAMODB=aws uses real AWS and "
                "never creates tables). Deploy the stack with `sam deploy` (`make deploy`) and set TABLE_NAME to its "
                "TableName output, or unset LOCAL_DYNAMODB to use the embedded emulator.") from None
        raise LocalDynamoDBError(f"cannot use DynamoDB table {table_name!r} in {region}: {exc}") from None
    except BotoCoreError as exc:
        raise LocalDynamoDBError(f"cannot reach DynamoDB in {region} for table {table_name!r} "
                                 f"(LOCAL_DYNAMODB=aws): {exc}") from None


def start_local_dynamodb(environ: MutableMapping[str, str] | None = None, *, reset: bool = False,
                         persist: bool = True) -> LocalDynamoDB:
    """Pick the backend, start the emulator if needed, export its settings into `environ`, create the tables.

    `reset` starts the emulator empty; `persist=False` keeps its data in memory only. Call it before
    importing the app: settings are read once, on first use.
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    backend = choose_backend(env)
    table_name = env.setdefault("TABLE_NAME", DEFAULT_TABLE_NAME)
    if backend == "aws":
        env.pop("DYNAMODB_ENDPOINT_URL", None)
        check_table(_client(env, None), table_name, _region(env))
        return LocalDynamoDB(backend, table_name, None)
    _local_credentials(env)
    env.setdefault("AWS_REGION", _region(env))
    env.setdefault("AWS_DEFAULT_REGION", env["AWS_REGION"])
    if backend == "endpoint":
        endpoint = env["DYNAMODB_ENDPOINT_URL"].strip()
        create_tables(_client(env, endpoint), table_name=table_name)
        return LocalDynamoDB(backend, table_name, endpoint)

    emulator = start_emulator(state_dir(env) if persist else None, reset=reset)
    try:
        env["DYNAMODB_ENDPOINT_URL"] = emulator.endpoint
        create_tables(_client(env, emulator.endpoint), table_name=table_name)
        # Attachments go to the same emulator's S3 (objects in memory only), in the template's bucket.
        if not env.get("ATTACHMENTS_BUCKET") or env.get("S3_ENDPOINT_URL"):
            env["S3_ENDPOINT_URL"] = emulator.endpoint
            env.setdefault("ATTACHMENTS_BUCKET", DEFAULT_BUCKET_NAME)
            create_attachments_bucket(_client(env, emulator.endpoint, "s3"), env["ATTACHMENTS_BUCKET"])
    except BaseException:
        emulator.stop()
        raise
    return LocalDynamoDB(backend, table_name, emulator.endpoint, emulator)


@contextmanager
def local_dynamodb(environ: MutableMapping[str, str] | None = None, *, reset: bool = False,
                   persist: bool = True) -> Iterator[LocalDynamoDB]:
    """`start_local_dynamodb()` for the duration of a `with` block; the emulator stops (and saves) on exit."""
    database = start_local_dynamodb(environ, reset=reset, persist=persist)
    try:
        yield database
    finally:
        database.stop()
