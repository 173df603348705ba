"""Fixtures for health tests: the real upstreams shared with tests/routing (`tests/routing/upstreams.py`)."""

from tests.routing.upstreams import llmock, llmock_server, moto_endpoint, table

__all__ = ["llmock", "llmock_server", "moto_endpoint", "table"]
