"""Fixtures for routing tests: the real upstreams live in `upstreams.py` (shared with tests/health)."""

from tests.routing.upstreams import llmock, llmock_server, moto_endpoint, table

__all__ = ["llmock", "llmock_server", "moto_endpoint", "table"]
