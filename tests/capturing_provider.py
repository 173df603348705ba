"""A provider for tests that answers like the mock and keeps every `ModelRequest` it is asked, so a
test can check what reached the provider through a public endpoint."""

from __future__ import annotations

from typing import Any

from chatcore.providers.mock import MockProvider


class CapturingProvider:
    name = "capture"

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self._mock = MockProvider(ttft_ms=0, pace_ms=0)

    async def stream(self, request: Any) -> Any:
        self.requests.append(request)
        async for event in self._mock.stream(request):
            yield event

    async def probe(self, timeout: float = 5.0) -> Any:
        return await self._mock.probe(timeout)
