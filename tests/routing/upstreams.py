"""The llmock upstream emulator for routing and health tests, on 127.0.0.1 on a free port, in a thread.

Imported by the conftest of `tests/routing` and `tests/health`. (DynamoDB: the suite-wide `table`
fixture in tests/conftest.py.)
"""

from __future__ import annotations

from tests.llmock_upstream import LLMock, llmock, llmock_server

__all__ = ["LLMock", "llmock", "llmock_server"]
