"""`python -m devtools.devserver` on a laptop without AWS: embedded moto, streaming chat, clean shutdown."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from .conftest import PYTHON, REPO_ROOT, local_tool_env

STARTUP_TIMEOUT_S = 90.0  # generous: a loaded 2-core CI machine imports moto + FastAPI slowly


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DevServer:
    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self.output = ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.output, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.output, _ = self.process.communicate()
        return self.process.returncode


@pytest.fixture
def devserver() -> Iterator[DevServer]:
    port = _free_port()
    env = local_tool_env(PORT=str(port))
    process = subprocess.Popen([PYTHON, "-m", "devtools.devserver"], cwd=REPO_ROOT, env=env, text=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = DevServer(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                server.stop()
                pytest.fail(f"devserver exited with {process.returncode}:\n{server.output}")
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                pytest.fail(f"devserver did not answer /healthz:\n{server.output}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def test_devserver_streams_chat_and_stops_the_emulator(devserver: DevServer,
                                                       sse_data: Callable[[bytes], list[str]]) -> None:
    assert httpx.get(f"{devserver.base_url}/healthz").json() == {"status": "ok"}

    body = {"id": "devserver-test", "model": "mock/lorem?tokens=12&pace_ms=40&ttft_ms=0",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Say hello"}]}],
            "trigger": "submit-message"}
    reads: list[bytes] = []
    with httpx.stream("POST", f"{devserver.base_url}/api/chat", json=body, timeout=60) as response:
        if response.status_code != 200:
            response.read()
            devserver.stop()
            pytest.fail(f"POST /api/chat -> {response.status_code} {response.text}\n{devserver.output}")
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        reads.extend(response.iter_raw())
    events = sse_data(b"".join(reads))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["type"] == "start" and chunks[-1]["type"] == "finish"
    deltas = [chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta"]
    assert len(deltas) == 12 and "".join(deltas).startswith("Lorem ipsum")
    # Twelve deltas 40 ms apart arrive over several socket reads: the body is streamed, not buffered.
    assert len(reads) > 1

    assert devserver.stop() == 0
    match = re.search(r"embedded moto at http://127\.0\.0\.1:(\d+)", devserver.output)
    assert match, devserver.output
    assert "Embedded DynamoDB emulator stopped." in devserver.output
    assert "curl -N" in devserver.output and "/api/chat/sse" in devserver.output
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(match[1]))) != 0
