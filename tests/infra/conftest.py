"""Fixtures for the SAM bundle and dev-tooling tests: the parsed template, moto, subprocess helpers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from devtools.template_tables import load_template

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT / ".." / "shared"

# Variables that would point a subprocess at real AWS or at another emulator.
_FOREIGN_ENV_PREFIXES = ("AWS_", "DYNAMODB_", "LOCAL_DYNAMODB", "TABLE_NAME", "OPENAI_", "ANTHROPIC_", "GEMINI_",
                         "AUTH_", "JWT_", "PORT", "DEFAULT_MODEL", "MEMORY", "LIMITS_")


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """template.yaml parsed by the same loader devtools uses (intrinsic tags kept as data)."""
    return load_template(REPO_ROOT / "template.yaml")


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1 (free port) for this test only."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def dynamodb_client(moto_endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def local_tool_env(**overrides: str) -> dict[str, str]:
    """Environment for running a devtools command as a user would on a laptop without AWS set up."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_FOREIGN_ENV_PREFIXES)}
    env.update({"PYTHONUNBUFFERED": "1", "LOCAL_DYNAMODB": "moto"})
    env.update(overrides)
    return env


PYTHON = sys.executable
