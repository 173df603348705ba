"""Fixtures for the limits tests: a fresh DynamoDB table in moto's server mode per test."""

from __future__ import annotations

import pytest

from tests.moto_dynamodb import Table, new_table


@pytest.fixture
def table() -> Table:
    return new_table()
