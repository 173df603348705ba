"""Fixtures for the SAM bundle and dev-tooling tests: the parsed template, an isolated DynamoDB client on
the suite's emulator, subprocess helpers."""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from devtools.emulator import Emulator
from devtools.template_tables import load_template
from tests import moto_dynamodb

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
def dynamodb_client(aws_emulator: Emulator) -> Any:
    """A DynamoDB client on the suite's emulator in an account of its own: fixed table names never clash."""
    return moto_dynamodb.client(account_id=f"{random.randrange(10**11, 10**12)}")


def local_tool_env(**overrides: str) -> dict[str, str]:
    """Environment for running a devtools command as a user would on a laptop without AWS set up.

    The emulator keeps its data in a fresh temporary directory, never in the repo's `.dev/dynamodb/`.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(_FOREIGN_ENV_PREFIXES)}
    env.update({"PYTHONUNBUFFERED": "1", "LOCAL_DYNAMODB": "moto",
                "LOCAL_DYNAMODB_DIR": tempfile.mkdtemp(prefix="chat-emulator-test-")})
    env.update(overrides)
    return env


PYTHON = sys.executable
