"""Fixtures shared by every test folder.

`serve_asgi` / `chat_server` run an app in a real uvicorn server on 127.0.0.1 (httpx's
ASGITransport buffers whole bodies, so only a real socket can show streaming). `sse_data` is a
strict parser of SSE bodies as the AI SDK reads them. `aws_emulator`, `dynamodb` and `table` are
the one way tests reach DynamoDB (and S3, SSM...): the out-of-process emulator of `make dev`
(tests/moto_dynamodb.py).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from chatcore.api.app import Components, create_app, default_components
from chatcore.providers import ProviderRegistry
from chatcore.providers.base import Provider
from chatcore.settings import Settings

from devtools.emulator import Emulator
from tests import moto_dynamodb
from tests.moto_dynamodb import Table

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"

# Generous: a loaded 2-core CI machine can take seconds to start a server thread.
STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 30.0


class ThreadedServer:
    """A uvicorn server in a background thread, on a socket bound before the thread starts."""

    def __init__(self, app: Any, **config: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        options: dict[str, Any] = {"log_level": "warning", "lifespan": "off", "timeout_graceful_shutdown": 5}
        options.update(config)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **options))
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._socket])
        except BaseException as exc:  # surfaced by start()
            self._error = exc

    def start(self) -> str:
        self._thread.start()
        # `started` flips once the socket is listening; poll without asserting on duration.
        for _ in range(int(STARTUP_TIMEOUT_S / 0.05)):
            if self.server.started or self._error is not None or not self._thread.is_alive():
                break
            time.sleep(0.05)
        if not self.server.started:
            self.stop()
            raise RuntimeError(f"uvicorn did not start on port {self.port}: {self._error!r}")
        return self.base_url

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(SHUTDOWN_TIMEOUT_S)
        self._socket.close()


@pytest.fixture
def serve_asgi() -> Iterator[Callable[..., str]]:
    """Factory: `serve_asgi(app, **uvicorn_config)` serves any ASGI app and returns its base URL.

    Every server started through it is stopped when the test ends.
    """
    servers: list[ThreadedServer] = []

    def serve(app: Any, **config: Any) -> str:
        server = ThreadedServer(app, **config)
        servers.append(server)
        return server.start()

    yield serve
    for server in reversed(servers):
        server.stop()


@pytest.fixture(scope="session")
def aws_emulator() -> Emulator:
    """The session's emulator process (tests/moto_dynamodb.py); `.endpoint` is its URL."""
    return moto_dynamodb.emulator()


@pytest.fixture(scope="session")
def dynamodb(aws_emulator: Emulator) -> Any:
    """A DynamoDB client for the emulator."""
    return moto_dynamodb.client()


@pytest.fixture
def table(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> Table:
    """A fresh, empty table per test (schema from template.yaml), in the emulator.

    Dummy AWS credentials and region are set in the environment for the test, so code that builds its
    own client from the environment signs with them and never with a developer's real keys.
    """
    for key, value in moto_dynamodb.AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_dynamodb.new_table(dynamodb)


def settings_for_tests(**overrides: Any) -> Settings:
    """Settings for tests: fast mock (no delays), no CORS, no network providers; overrides win."""
    base = Settings(stage="test", default_model="mock/echo", mock_ttft_ms=0.0, mock_pace_ms=0.0, cors_in_app=False)
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def chat_server(serve_asgi: Callable[..., str]) -> Callable[..., str]:
    """Factory: start the chat app in a real uvicorn server and return its base URL.

    `chat_server(mock_pace_ms=5)` overrides `Settings` fields; `providers={"gated": provider}`
    registers extra providers (reachable as model `gated/...`); `components=` replaces the whole
    composition (authenticator, limiter, memory, providers) for tests of those seams.
    """

    def start(*, components: Components | None = None, providers: dict[str, Provider] | None = None,
              settings: Settings | None = None, **overrides: Any) -> str:
        if components is None:
            resolved = settings or settings_for_tests(**overrides)
            components = default_components(resolved, ProviderRegistry(resolved, overrides=providers))
        elif providers:
            for name, provider in providers.items():
                components.providers.register(name, provider)
        return serve_asgi(create_app(components=components))

    return start


def sse_data(body: bytes) -> list[str]:
    """The `data` of each event in a complete SSE body, strictly as the AI SDK's client reads it.

    Fails on anything a compliant encoder must not produce: a last event without its blank
    line (the SDK silently drops it), non-`data:` fields, or bytes that are not UTF-8.
    """
    text = body.decode("utf-8")
    assert text.endswith("\n\n"), f"the body must end with a blank line, got {text[-40:]!r}"
    out: list[str] = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        assert all(line.startswith("data: ") for line in lines), f"unexpected SSE lines: {block!r}"
        out.append("\n".join(line[len("data: "):] for line in lines))
    return out


@pytest.fixture(name="sse_data")
def sse_data_fixture() -> Callable[[bytes], list[str]]:
    """`sse_data(body)` as a fixture, so test folders need no imports from this file."""
    return sse_data
