"""Fixtures for health tests: the llmock upstream shared with tests/routing (`tests/routing/upstreams.py`).
DynamoDB comes from the suite-wide `table` fixture (tests/conftest.py)."""

from tests.routing.upstreams import llmock, llmock_server

__all__ = ["llmock", "llmock_server"]
