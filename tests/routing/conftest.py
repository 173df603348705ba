"""Fixtures for routing tests: the llmock upstream lives in `upstreams.py` (shared with tests/health).
DynamoDB comes from the suite-wide `table` fixture (tests/conftest.py)."""

from tests.routing.upstreams import llmock, llmock_server

__all__ = ["llmock", "llmock_server"]
